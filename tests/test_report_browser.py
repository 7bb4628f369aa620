"""report.html as a person sees it: headless Chromium (Debian's, via Selenium) opens the file,
logs no console error, draws every chart, and leaves a screenshot.

Needs `scripts/setup-system.sh` (apt packages chromium, chromium-driver).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser import chromium, needs_chromium
from distillguard.outputs.report import write_all
from fixtures_run import build_run_dir

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def driver():
    drv = chromium()
    yield drv
    drv.quit()


def test_report_renders_in_chromium(tmp_path: Path, driver) -> None:
    out = write_all(build_run_dir(tmp_path / "run"))
    driver.get(out["report"].resolve().as_uri())
    images = driver.find_elements("css selector", "img.chart")
    # 1 overview timeline + per campaign: capability, timeline, volume, graph.
    assert len(images) == 1 + 2 * 4
    for img in images:
        width = driver.execute_script(
            "return arguments[0].complete ? arguments[0].naturalWidth : 0;", img)
        assert width > 0, img.get_attribute("alt")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert "Campaign cmp-001" in driver.find_element("tag name", "body").text
    shot = Path(os.environ.get("DISTILLGUARD_SCREENSHOT", tmp_path / "report.png"))
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
