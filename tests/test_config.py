"""The configuration file: a key takes the type of its documented default, checked on load."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from distillguard import config
from distillguard.cli import app
from distillguard.errors import InputError


def _load(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "my.toml"
    path.write_text(text)
    return config.load(path)


def test_a_user_file_changes_only_its_keys(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "[serve]\nrelink_minutes = 15\nwindow_hours = 12.5\n"
                          "[campaigns]\nsupporting_behaviours = ['n_asns']\n")
    assert cfg["serve"]["relink_minutes"] == 15  # a whole number where a number is asked
    assert cfg["serve"]["window_hours"] == 12.5
    assert cfg["campaigns"]["supporting_behaviours"] == ["n_asns"]
    assert cfg["linking"] == config.defaults()["linking"]


@pytest.mark.parametrize(("text", "message"), [
    ("[signals]\nstimulus_window_seconds = 'an hour'\n",
     "'signals.stimulus_window_seconds' must be a whole number (default 3600), not 'an hour'"),
    ("[signals]\nstimulus_min_accounts = 2.5\n", "must be a whole number"),
    ("[campaigns]\nvocabulary_resolution = '2'\n", "must be a number (default 2.0)"),
    ("[campaigns]\nvocabulary_resolution = true\n", "must be a number"),
    ("[serve]\nmember_behaviour_required = 1\n", "must be true or false"),
    ("[campaigns]\nrotation_behaviours = 'n_asns'\n", "must be a list of strings"),
    ("[campaigns]\nrotation_behaviours = [3]\n", "must be a list of strings"),
    ("[engine]\nmemory_limit = 4\n", "must be a string"),
    ("[serve]\nwindow_hours = 2026-11-28\n", "must be a number"),
    ("[campaigns.extra]\nx = 1\n", "unknown configuration key 'campaigns.extra'"),
    ("campaigns = 3\n", "'campaigns' must be a table"),
])
def test_a_wrong_key_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        _load(tmp_path, text)
    assert str(err.value).startswith(f"file {tmp_path / 'my.toml'}: ")
    assert message in str(err.value)


def test_the_cli_stops_on_a_wrong_key_before_reading_traffic(tmp_path: Path) -> None:
    (tmp_path / "my.toml").write_text("[campaigns]\nmin_accounts = 'three'\n")
    res = CliRunner().invoke(app, ["detect", "--exchanges", str(tmp_path / "missing.parquet"),
                                   "--config", str(tmp_path / "my.toml"),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "'campaigns.min_accounts' must be a whole number" in res.output
    assert "Traceback" not in res.output
