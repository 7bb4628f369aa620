"""`distillguard report`: the four outputs, read back the way their consumers read them."""

from __future__ import annotations

import base64
import csv
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import stix2
from markupsafe import escape
from stix2patterns.validator import run_validator

from distillguard import config
from distillguard.errors import InputError
from distillguard.outputs.enforcement import COLUMNS, suggest
from distillguard.outputs.explain import GENERIC_EXPLANATION, SIGNAL_EXPLANATIONS, explain
from distillguard.outputs.provenance_results import load_provenance, p_text
from distillguard.outputs.redact import KEY_ENV, load_key, scrub_snippet
from distillguard.outputs.report import OUTPUT_FILES, write_all
from distillguard.outputs.rundir import open_run
from distillguard.outputs.stix import ATLAS_ID
from distillguard.outputs.summary_md import render_markdown
from distillguard.outputs.view import make_view
from fixtures_run import CAMPAIGNS, RAW_VALUES, build_run_dir, provenance_doc, write_provenance

KEY = b"test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run_dir(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def plain(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_all(run_dir, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def redacted(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_all(run_dir, tmp_path_factory.mktemp("redacted"), redact_key=KEY)


class _Resources(HTMLParser):
    """Collects every src/href attribute and the <img> tags of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "img":
            self.images.append(dict(attrs))


def _parse_html(path: Path) -> _Resources:
    parser = _Resources()
    parser.feed(path.read_text("utf-8"))
    return parser


# --- report.html ------------------------------------------------------------------------------


def test_write_all_returns_the_four_files(plain: dict[str, Path]) -> None:
    assert set(plain) == set(OUTPUT_FILES)
    for key, path in plain.items():
        assert path.name == OUTPUT_FILES[key]
        assert path.stat().st_size > 0


def test_html_is_self_contained(plain: dict[str, Path]) -> None:
    page = _parse_html(plain["report"])
    html = plain["report"].read_text("utf-8")
    assert page.links, "the page has links (contents) and images"
    for link in page.links:
        assert link.startswith(("#", "data:image/png;base64,")), link[:80]
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html)
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert "<link" not in html.lower()


def test_html_charts_are_real_pngs(plain: dict[str, Path]) -> None:
    images = _parse_html(plain["report"]).images
    assert len(images) == 1 + 4 * len(CAMPAIGNS)
    for img in images:
        data = base64.b64decode(str(img["src"]).split(",", 1)[1])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width = int.from_bytes(data[16:20], "big")
        assert width > 200, img["alt"]
        assert img["alt"]


def test_html_shows_the_evidence(plain: dict[str, Path]) -> None:
    html = plain["report"].read_text("utf-8")
    for cid in CAMPAIGNS:
        assert f"Campaign {cid}" in html
    # Signals with their how-to-read text, the generic fallback for an unknown one.
    assert str(escape(SIGNAL_EXPLANATIONS["synchrony"])) in html
    assert "mystery_statistic" in html and str(escape(GENERIC_EXPLANATION)) in html
    # A repeated explanation is written once per campaign, later rows point to it.
    assert html.count(str(escape(explain("unusual_tool_share")))) == 2  # table + reading guide
    assert "<code>unusual_n_asns</code>, <code>unusual_tool_share</code></dt>" in html
    assert "As for <code>unusual_tool_share</code> above." in html
    # Skipped signals with reasons, allowlisted accounts, the volume argument.
    assert "response_similarity" in html and "column &#39;response&#39; is absent" in html
    assert "acct-p00" in html and "Permitted distillation" in html
    assert "would have\n    stopped <strong>0 of 14</strong>" in html
    assert "atlas-3 at 2026-03-05 12:00 UTC" in html


def test_html_escapes_and_truncates_prompt_snippets(plain: dict[str, Path]) -> None:
    html = plain["report"].read_text("utf-8")
    assert "&lt;script&gt;alert(" in html and "<script>alert(" not in html
    assert "tracker.example" not in html and "ops@" not in html and "grader@" not in html
    assert "&lt;url&gt;" in html and "&lt;email&gt;" in html
    snippet = re.search(r"Solve step by step[^<]*", html)
    assert snippet is not None and snippet.group(0).endswith("…")
    assert len(unescape(snippet.group(0))) <= config.load()["report"]["snippet_chars"]


def test_outputs_are_deterministic(run_dir: Path, plain: dict[str, Path],
                                   tmp_path: Path) -> None:
    again = write_all(run_dir, tmp_path)
    for key in OUTPUT_FILES:
        assert again[key].read_bytes() == plain[key].read_bytes(), key


def test_report_degrades_without_optional_tables(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path / "run", releases=False, optional=False)
    paths = write_all(run)
    html = paths["report"].read_text("utf-8")
    assert len(_parse_html(paths["report"]).images) == len(CAMPAIGNS)  # capability mix only
    assert "edges.parquet not in the run directory" in html
    assert "No hourly timeline in this run" in html
    assert "No prompt templates recorded" in html


def test_report_with_no_campaign(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path / "run", optional=False)
    (run / "campaigns.json").write_text("[]")
    paths = write_all(run)
    assert "No campaign was detected." in paths["report"].read_text("utf-8")
    assert "0 campaigns of coordinated" in paths["campaigns"].read_text("utf-8")
    types = {o.type for o in _bundle(paths["stix"]).objects}
    assert types == {"marking-definition", "identity", "attack-pattern"}


def test_report_lists_organisation_use(tmp_path: Path) -> None:
    """A campaign-like group of one declared organisation's seats is not flagged; the
    report shows it, so a reader sees it was set aside on purpose, not missed."""
    run = build_run_dir(tmp_path / "run", optional=False)
    meta = json.loads((run / "run.json").read_text("utf-8"))
    meta["organisation_use"] = [{"org_id": "org-claims", "score": 0.99,
                                 "account_ids": ["a1", "a2", "a3"],
                                 "signals": [{"name": "unusual_extraction_share", "value": 1.0,
                                              "detail": ""}]}]
    (run / "run.json").write_text(json.dumps(meta))
    html = write_all(run)["report"].read_text("utf-8")
    row = re.search(r'<table id="organisation-table">.*?</table>', html, re.S)
    assert row and "org-claims" in row.group(0) and "unusual_extraction_share" in row.group(0)
    plain = write_all(build_run_dir(tmp_path / "plain", optional=False))["report"]
    assert "organisation-table" not in plain.read_text("utf-8")


# --- indicators.stix.json ---------------------------------------------------------------------


def _bundle(path: Path) -> stix2.Bundle:
    return stix2.parse(path.read_text("utf-8"), allow_custom=True)


def test_stix_round_trip_and_shape(plain: dict[str, Path]) -> None:
    bundle = _bundle(plain["stix"])
    objects = {o.id: o for o in bundle.objects}
    by_type: dict[str, list] = {}
    for o in bundle.objects:
        by_type.setdefault(o.type, []).append(o)
    assert len(by_type["campaign"]) == len(by_type["intrusion-set"]) == len(CAMPAIGNS)
    assert len(by_type["sighting"]) == len(CAMPAIGNS)
    for o in bundle.objects:
        if o.type in ("campaign", "intrusion-set", "indicator", "attack-pattern", "identity"):
            assert o.name and o.description, o.id
        for ref in [o.get("created_by_ref"), o.get("source_ref"), o.get("target_ref"),
                    o.get("sighting_of_ref"), *o.get("where_sighted_refs", []),
                    *o.get("object_marking_refs", [])]:
            assert ref is None or ref in objects, (o.id, ref)
    for ind in by_type["indicator"]:
        assert ind.pattern_type == "stix" and run_validator(ind.pattern, "2.1") == []
    (attack,) = by_type["attack-pattern"]
    assert attack.external_references[0].external_id == ATLAS_ID
    rels = {(objects[r.source_ref].type, r.relationship_type, objects[r.target_ref].type)
            for r in by_type["relationship"]}
    assert rels == {("campaign", "attributed-to", "intrusion-set"),
                    ("campaign", "uses", "attack-pattern"),
                    ("intrusion-set", "uses", "attack-pattern"),
                    ("indicator", "indicates", "campaign")}


def test_stix_campaign_sighting_and_custom_properties(plain: dict[str, Path]) -> None:
    bundle = _bundle(plain["stix"])
    campaign = next(o for o in bundle.objects if o.get("x_distillguard_campaign_id") == "cmp-001")
    assert campaign.x_distillguard_payment_fingerprints == ["pf_7c1e9a44d2"]
    assert campaign.confidence == 97
    sighting = next(o for o in bundle.objects
                    if o.type == "sighting" and o.sighting_of_ref == campaign.id)
    assert sighting.count == 5210
    assert sighting.first_seen.isoformat().startswith("2026-03-02T01:00")
    assert sighting.last_seen.isoformat().startswith("2026-03-06T22:00")


def test_stix_patterns(plain: dict[str, Path]) -> None:
    patterns = {o.pattern for o in _bundle(plain["stix"]).objects if o.type == "indicator"}
    assert {
        "[ipv4-addr:value = '203.0.113.7']",
        "[ipv6-addr:value = '2001:db8:5::17']",
        "[ipv4-addr:value ISSUBSET '203.0.113.0/24']",
        "[ipv6-addr:value ISSUBSET '2001:db8:5::/48']",
        "[autonomous-system:number = 64500]",
        "[email-addr:value LIKE '%@quickmail-relay.example']",
        "[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = "
        "'python-httpx/0.27 harvest/1.2']",
    } <= patterns


def test_stix_rejects_a_malformed_ip(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path / "run", optional=False)
    campaigns = json.loads((run / "campaigns.json").read_text())
    campaigns[0]["indicators"]["ips"].append("999.1.2.3")
    (run / "campaigns.json").write_text(json.dumps(campaigns))
    with pytest.raises(InputError, match=r"999\.1\.2\.3"):
        write_all(run)


# --- enforcement.csv --------------------------------------------------------------------------


def test_enforcement_csv(plain: dict[str, Path]) -> None:
    with plain["enforcement"].open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = {r["account_id"]: r for r in reader}
    assert len(rows) == 14 + 8 + 1  # every flagged account, no other
    assert {rows[f"acct-a{i:02d}"]["suggested_action"] for i in range(14)} == {"suspend"}
    # cmp-002 came through education sign-ups: re-verify, never suspend.
    assert {rows[f"acct-b{i:02d}"]["suggested_action"] for i in range(8)} == {"re-verify"}
    assert rows["acct-s00"]["suggested_action"] == "throttle"
    assert rows["acct-s00"]["campaign_id"] == ""
    assert rows["acct-a00"]["evidence"].startswith("synchrony:z=9.1; template_family")
    scores = [float(r["score"]) for r in rows.values()]
    assert scores == sorted(scores, reverse=True)


def test_suggest_rule() -> None:
    cfg = config.load()["report"]
    scores = np.array([0.95, 0.95, 0.8, 0.8, 0.5, 0.5])
    paths = [None, "education", "standard", "enterprise", None, "research"]
    assert suggest(scores, paths, cfg).tolist() == [
        "suspend", "re-verify", "re-verify", "re-verify", "throttle", "throttle"]


# --- campaigns.md -----------------------------------------------------------------------------


def test_markdown_summary(plain: dict[str, Path]) -> None:
    md = plain["campaigns"].read_text("utf-8")
    assert md.startswith("# Distillation campaigns detected on 2026-03-07 00:00 UTC")
    assert md.count("\n## Campaign ") == len(CAMPAIGNS)
    cmp1 = md.split("## Campaign cmp-001")[1].split("## Campaign")[0]
    assert "14 accounts\nsent 5,210 exchanges" in cmp1
    assert "coding (62%)" in cmp1
    assert "`synchrony` = 9.1: co-active in 1-minute buckets" in cmp1
    assert f"- `synchrony`: {explain('synchrony')}" in md
    assert f"- `unusual_tool_share`: {explain('unusual_')}" in md
    assert "`203.0.113.0/24`" in cmp1 and "`AS64500`" in cmp1
    assert "suspend 14, re-verify 8, throttle 1" in md
    assert "`unusual_tool_share` = 0.5" in md and "`unusual_n_asns`" not in md
    assert "(1 signals with value 0 omitted" in md
    assert "<email>" in cmp1 and "ops@" not in cmp1
    # Template objects from the engine appear as ids, never with their raw example.
    assert "`tpl-c0de`" in md and "grader@" not in md


# --- provenance results filed with the run --------------------------------------------------


def _sections(html: str) -> list[str]:
    """The per-campaign sections of the page, in order."""
    return html.split('<section class="campaign" id="campaign-')[1:]


def test_provenance_result_shown_with_its_campaign(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path / "run", optional=False)
    write_provenance(run, "cmp-001", provenance_doc())
    write_provenance(run, "cmp-002", provenance_doc(
        "cmp-002", mode="reading", p_value=0.0, log10_p_value=-1234.56, verdict="learned"))
    paths = write_all(run)
    html = paths["report"].read_text("utf-8")
    cmp1, cmp2 = _sections(html)[:2]
    assert "Provenance test" in cmp1 and "Provenance file skipped" not in html
    assert '<td class="n">2.8e-12</td>' in cmp1 and "<strong>learned</strong>" in cmp1
    assert '<td class="n">10,349</td>' in cmp1 and "0.280 (0.250)" in cmp1
    assert "z mean -0.02, sd 0.94\n          over 50 wrong keys</td>" in cmp1
    assert str(escape(provenance_doc()["verdict_text"])) in cmp1
    assert "What the test cannot prove" in cmp1 and "docs/provenance.md" in cmp1
    assert "<td>reading</td>" in cmp2 and "10^-1234.6" in cmp2  # p underflowed to 0.0
    md = paths["campaigns"].read_text("utf-8")
    md1 = md.split("## Campaign cmp-001")[1].split("## Campaign")[0]
    assert ("**Provenance test** (generation mode, 10,349 tokens scored): p = 2.8e-12, "
            "verdict `learned`: the text carries the watermark") in md1
    # Without a provenance folder nothing changes (the fixture `plain` has none).
    assert "Provenance" not in write_all(build_run_dir(tmp_path / "bare", optional=False),
                                         tmp_path / "out")["campaigns"].read_text("utf-8")


def test_malformed_provenance_files_warn_and_are_skipped(tmp_path: Path) -> None:
    run = build_run_dir(tmp_path / "run", optional=False)
    write_provenance(run, "cmp-001", "{\"key_id\": ")
    write_provenance(run, "cmp-002", {k: v for k, v in provenance_doc("cmp-002").items()
                                      if k != "p_value"})
    write_provenance(run, "cmp-404", provenance_doc("cmp-404"))
    paths = write_all(run)
    html = paths["report"].read_text("utf-8")
    assert html.count("Provenance file skipped") == 3
    assert "provenance/cmp-001.json: unreadable" in html
    assert "provenance/cmp-002.json: missing or invalid p_value; not shown" in html
    assert "provenance/cmp-404.json: no campaign &#39;cmp-404&#39; in this run" in html
    assert "Provenance test" not in html
    assert "Provenance" not in paths["campaigns"].read_text("utf-8")


@pytest.mark.parametrize(("change", "problem"), [
    ({"verdict": "guilty"}, "unknown verdict 'guilty'"),
    ({"mode": "compare"}, "unknown mode 'compare'"),
    ({"campaign_id": "cmp-002"}, "its campaign_id is 'cmp-002'"),
    ({"tokens_scored": True}, "missing or invalid tokens_scored"),
    ({"calibration": {"mean": 0.1, "sd": 1.0, "n_keys": 50}}, "invalid calibration.ok"),
])
def test_provenance_checks(tmp_path: Path, change: dict, problem: str) -> None:
    write_provenance(tmp_path, "cmp-001", provenance_doc(**change))
    found, warnings = load_provenance(tmp_path, ["cmp-001", "cmp-002"])
    assert found == {} and len(warnings) == 1 and problem in warnings[0]


def test_p_text() -> None:
    assert p_text(2.8e-12, -11.55) == "2.8e-12"
    assert p_text(0.0, -1234.56) == "10^-1234.6"
    assert p_text(0.0, None) == "< 1e-308 (underflow)"


# --- redaction --------------------------------------------------------------------------------


def test_redaction_leaves_no_raw_value_in_any_output(redacted: dict[str, Path]) -> None:
    for path in redacted.values():
        text = path.read_text("utf-8")
        for raw in (*RAW_VALUES, "203.0.113", "198.51.100"):
            assert raw not in text, (path.name, raw)
    assert "id=\"redaction-note\"" in redacted["report"].read_text("utf-8")


def test_redacted_tokens_are_consistent(redacted: dict[str, Path], run_dir: Path) -> None:
    md = redacted["campaigns"].read_text("utf-8")
    stix_text = redacted["stix"].read_text("utf-8")
    tokens = set(re.findall(r"hmac:[0-9a-f]{16}", md))
    assert len(tokens) == len(RAW_VALUES)
    assert tokens <= set(re.findall(r"hmac:[0-9a-f]{16}", stix_text))
    for o in _bundle(redacted["stix"]).objects:
        if o.type == "indicator":
            assert run_validator(o.pattern, "2.1") == []
    view = make_view(open_run(run_dir), b"another-key-0123456789", config.load()["report"])
    other = render_markdown(view, {})
    assert len(set(re.findall(r"hmac:[0-9a-f]{16}", other))) == len(tokens)
    assert not tokens & set(re.findall(r"hmac:[0-9a-f]{16}", other))


def test_redaction_covers_provenance_results(tmp_path: Path) -> None:
    # Nothing in a provenance file identifies anyone, unless a free-form key id does.
    run = build_run_dir(tmp_path / "run", optional=False)
    key_id = "cluster:203.0.113.7"
    write_provenance(run, "cmp-001", provenance_doc(
        key_id=key_id, verdict_text=f"no evidence of the key {key_id!r} watermark (p = 0.43)",
        verdict="not_detected", p_value=0.43, log10_p_value=-0.37))
    paths = write_all(run, redact_key=KEY)
    for name in ("report", "campaigns"):
        text = paths[name].read_text("utf-8")
        assert "203.0.113.7" not in text and "p = 0.43" in text and "not_detected" in text


def test_load_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=KEY_ENV):
        load_key(None, environ={})
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    with pytest.raises(InputError, match="shorter than"):
        load_key(short, environ={})
    good = tmp_path / "good.key"
    good.write_bytes(KEY + b"\n")
    assert load_key(good, environ={KEY_ENV: "ignored-when-a-file-is-given"}) == KEY
    assert load_key(None, environ={KEY_ENV: KEY.decode()}) == KEY


def test_scrub_snippet() -> None:
    text = "Mail a.b@corp.example from 10.1.2.3 or 2001:db8::1, see https://x.example/a?b=1 now"
    out = scrub_snippet(text, 200)
    assert out == "Mail <email> from <ip> or <ip>, see <url> now"
    assert scrub_snippet("word " * 100, 20) == "word word word word…"
    assert scrub_snippet("at 12:30:45 sharp", 50) == "at 12:30:45 sharp"
    assert scrub_snippet(None, 10) == ""


def test_explain_falls_back() -> None:
    assert explain("synchrony:z=9.1") == SIGNAL_EXPLANATIONS["synchrony"]
    assert explain("shared_payment_3") == SIGNAL_EXPLANATIONS["shared_payment"]
    assert explain("no_such_signal") == GENERIC_EXPLANATION


# --- CLI --------------------------------------------------------------------------------------


def test_cli_report(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = build_run_dir(tmp_path / "run", optional=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    result = cli("report", run, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "out").iterdir()} == set(OUTPUT_FILES.values())

    result = cli("report", run, "--redact")
    assert result.exit_code == 2 and KEY_ENV in result.stderr

    monkeypatch.setenv(KEY_ENV, KEY.decode())
    result = cli("report", run, "--redact", "--out", tmp_path / "red")
    assert result.exit_code == 0, result.output
    assert "pf_7c1e9a44d2" not in (tmp_path / "red" / "campaigns.md").read_text()


def test_cli_report_bad_run_dir(cli, tmp_path: Path) -> None:
    result = cli("report", tmp_path / "missing")
    assert result.exit_code == 2 and "run directory not found" in result.stderr
    run = build_run_dir(tmp_path / "run", optional=False)
    (run / "campaigns.json").write_text("[{\"campaign_id\": ")
    result = cli("report", run)
    assert result.exit_code == 2 and "campaigns.json" in result.stderr
    assert "Traceback" not in result.output
