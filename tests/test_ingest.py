"""Contract ingest: bad files stop with one line (exit 2), bad rows are quarantined, counts add up.

Every bad-input case of the foundation issue has a test here, in every input format.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FORMATS, column, exchange_row, load, quarantined, write_parquet, write_rows
from distillguard.contract import ACCOUNTS, EXCHANGES, RELEASES
from distillguard.errors import InputError
from distillguard.ingest.validate import SQL_TYPE

BIG = "é" * 500_001  # 500,001 characters but 1,000,002 bytes: the limit counts bytes
LIMIT = "x" * 1_000_000  # exactly at the limit: accepted

# Records with one problem each (None: a good record) and what the quarantine must say.
MIXED: list[tuple[dict, tuple[str, str] | None]] = [
    (exchange_row(1, ip="203.0.113.9", asn="64500", has_image="true",
                  tool_names=["search", "calc"]), None),
    (exchange_row(2, ts="last tuesday"), ("ts", "unparseable timestamp")),
    (exchange_row(3, account_id=""), ("account_id", "missing account_id")),
    (exchange_row(4, account_id="   "), ("account_id", "missing account_id")),
    (exchange_row(5, ts=None), ("ts", "missing ts")),
    (exchange_row(1, prompt="same id again"),
     ("exchange_id", "duplicate exchange_id (first at file {file} row 1)")),
    (exchange_row(7, asn="abc"), ("asn", "not an integer")),
    (exchange_row(8, has_image="maybe"), ("has_image", "not a boolean")),
    (exchange_row(9, tool_names="search, calc"),
     ("tool_names", "not a list of strings (JSON array)")),
    (exchange_row(10, tool_names='{"a": 1}'), ("tool_names", "not a list of strings (JSON array)")),
    (exchange_row(11, ip="300.1.2.3"), ("ip", "invalid IP address")),
    (exchange_row(12, ip="2001:db8::g1"), ("ip", "invalid IP address")),
    (exchange_row(13, ip="1:2:3:4:5:6:7:8:9"), ("ip", "invalid IP address")),
    (exchange_row(14, ip="::ffff:192.0.2.1", n_messages="3"), None),
    (exchange_row(15, ip="2001:db8:85a3::8a2e:370:7334", thinking="false",
                  input_tokens="12.0"), None),
    (exchange_row(16, prompt=BIG), ("prompt", "prompt larger than 1000000 bytes")),
    (exchange_row(17, prompt=LIMIT), None),
    (exchange_row(18, prompt=""), None),  # empty prompt text is allowed by the contract
    (exchange_row(19, n_messages="4.5"), ("n_messages", "not an integer")),
    (exchange_row(20, output_tokens="0x10"), ("output_tokens", "not an integer")),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_rows_quarantined_good_rows_kept(tmp_path: Path, fmt: str) -> None:
    path = write_rows(tmp_path / f"mixed.{fmt}", [rec for rec, _ in MIXED])
    con, report = load([path])

    expected = [(path.name, i, col, reason.format(file=path))
                for i, (_, bad) in enumerate(MIXED, start=1) if bad for col, reason in [bad]]
    assert quarantined(con) == expected
    rep = report.tables["exchanges"]
    good = [rec["exchange_id"] for rec, bad in MIXED if bad is None]
    assert (rep.rows_read, rep.rows_accepted, rep.rows_quarantined) == (
        len(MIXED), len(good), len(expected))
    assert rep.rows_read == rep.rows_accepted + rep.rows_quarantined
    assert sorted(column(con, "SELECT exchange_id FROM exchanges")) == sorted(good)
    first = con.execute("SELECT prompt, ip, asn, has_image, tool_names FROM exchanges "
                        "WHERE exchange_id = 'e1'").fetchone()
    assert first == ("prompt number 1", "203.0.113.9", 64500, True, ["search", "calc"])


VALID_IPS = [
    "0.0.0.0", "255.255.255.255", "::", "::1", "2001:db8::", "fe80::1",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
    "::ffff:192.0.2.1", "::FFFF:192.0.2.1", "64:ff9b::192.0.2.33", "1:2:3:4:5:6:192.0.2.1",
    "2001:db8:1::2:192.0.2.1", "2001:DB8::ABCD", " 192.0.2.1 "]
INVALID_IPS = [
    "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1::2::3", "12345::", ":1", "1:",
    "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:1.2.3.4", "::ffff:300.1.1.1", "fe80::1%eth0",
    "localhost"]


def test_ip_forms(tmp_path: Path) -> None:
    """Every IPv4 / IPv6 text form (compressed, upper case, IPv4 tail) passes; others not."""
    rows = [exchange_row(i, ip=ip) for i, ip in enumerate(VALID_IPS + INVALID_IPS, start=1)]
    con, _ = load([write_rows(tmp_path / "x.jsonl", rows)])
    assert column(con, "SELECT ip FROM exchanges ORDER BY len(exchange_id), exchange_id") == \
        VALID_IPS
    assert quarantined(con) == [("x.jsonl", i, "ip", "invalid IP address")
                                for i in range(len(VALID_IPS) + 1, len(rows) + 1)]


# --- invalid UTF-8 ---------------------------------------------------------------------------

def _jsonl_with_bad_utf8(path: Path) -> Path:
    good = json.dumps(exchange_row(1)).encode()
    bad = json.dumps(exchange_row(2, prompt="PLACEHOLDER")).encode().replace(
        b"PLACEHOLDER", b"caf\xe9 \xff")
    data = good + b"\n" + bad + b"\n" + json.dumps(exchange_row(3)).encode() + b"\n"
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.jsonl.gz"])
def test_invalid_utf8_in_jsonl(tmp_path: Path, name: str) -> None:
    con, report = load([_jsonl_with_bad_utf8(tmp_path / name)])
    assert quarantined(con) == [(name, 2, "prompt", "invalid UTF-8")]
    assert report.tables["exchanges"].rows_accepted == 2


def test_invalid_utf8_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"exchange_id,ts,account_id,prompt\n"
                     b"c1,2026-03-01T12:00:00Z,a,fine\n"
                     b"c2,2026-03-01T12:00:00Z,a,caf\xe9\n"
                     b"c3,2026-03-01T12:00:00Z,\xff\xfe,fine\n"
                     b'c4,2026-03-01T12:00:00Z,a,"two\nlines"\n')
    con, report = load([path])
    assert quarantined(con) == [("bad.csv", 2, "prompt", "invalid UTF-8"),
                                ("bad.csv", 3, "account_id", "invalid UTF-8")]
    assert column(con, "SELECT prompt FROM exchanges ORDER BY 1") == ["fine", "two\nlines"]
    assert report.rows_read == 4


def test_invalid_utf8_in_parquet_string_column(tmp_path: Path) -> None:
    """A Parquet string column with invalid bytes falls back to byte staging, row by row."""
    raw = pa.array([b"good", b"bad \xff\xfe", b"also good", None], pa.binary())
    prompts = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers(), null_count=1)
    path = write_parquet(tmp_path / "bad.parquet", {
        "exchange_id": ["p1", "p2", "p3", "p4"],
        "ts": pa.array([datetime(2026, 3, 1, 12)] * 4, pa.timestamp("us")),
        "account_id": ["a", "a", "b", "b"],
        "prompt": prompts,
        "asn": pa.array([1, 2, 3, 4], pa.int64()),
    })
    con, report = load([path])
    assert quarantined(con) == [("bad.parquet", 2, "prompt", "invalid UTF-8")]
    assert con.execute("SELECT exchange_id, prompt, asn, ts FROM exchanges ORDER BY 1").fetchall() \
        == [("p1", "good", 1, datetime(2026, 3, 1, 12)), ("p3", "also good", 3,
            datetime(2026, 3, 1, 12)), ("p4", None, 4, datetime(2026, 3, 1, 12))]
    rep = report.tables["exchanges"]
    assert (rep.rows_read, rep.rows_accepted, rep.rows_quarantined) == (4, 3, 1)


def test_a_file_with_invalid_utf8_beside_good_files_is_checked_once(tmp_path: Path) -> None:
    """All files are checked in one statement; when one of them has invalid UTF-8 the
    statement is undone and redone file by file, so another file's bad row is quarantined
    once, not twice."""
    raw = pa.array([b"bad \xff", b"fine"], pa.binary())
    prompts = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())
    ts = pa.array([datetime(2026, 3, 1, 12)] * 2, pa.timestamp("us"))
    bad = write_parquet(tmp_path / "b.parquet", {
        "exchange_id": ["b1", "b2"], "ts": ts, "account_id": ["a", "a"], "prompt": prompts})
    good = write_parquet(tmp_path / "a.parquet", {
        "exchange_id": ["a1", "a2"], "ts": ts, "account_id": ["a", "b"],
        "prompt": ["x", "y"], "ip": ["10.0.0.1", "999.1.1.1"]})
    con, report = load([good, bad])
    assert quarantined(con) == [("a.parquet", 2, "ip", "invalid IP address"),
                                ("b.parquet", 1, "prompt", "invalid UTF-8")]
    assert column(con, "SELECT exchange_id FROM exchanges ORDER BY 1") == ["a1", "b2"]
    rep = report.tables["exchanges"]
    assert (rep.rows_read, rep.rows_accepted, rep.rows_quarantined) == (4, 2, 2)


# --- records that cannot even be parsed --------------------------------------------------------

def test_unparseable_jsonl_records_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join([json.dumps(exchange_row(1)), "{not json", "[1, 2]",
                               "", json.dumps(exchange_row(2))]) + "\n")
    con, report = load([path])
    assert quarantined(con) == [("x.jsonl", 2, "(record)", "invalid JSON"),
                                ("x.jsonl", 3, "(record)", "record is not a JSON object")]
    # A blank line is not a record; rows are numbered by line so they can be found.
    assert (report.rows_read, report.rows_quarantined) == (4, 2)


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.csv"])
def test_byte_order_mark_and_crlf(tmp_path: Path, name: str) -> None:
    """Files saved by Windows tools: a UTF-8 BOM and CRLF line ends."""
    rows = [exchange_row(1), exchange_row(2)]
    plain = write_rows(tmp_path / f"plain{Path(name).suffix}", rows).read_bytes()
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n"))
    con, report = load([path])
    assert report.rows_quarantined == 0
    assert column(con, "SELECT prompt FROM exchanges ORDER BY 1") == [
        "prompt number 1", "prompt number 2"]


def test_malformed_csv_record_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("exchange_id,ts,account_id,prompt\nc1,2026-03-01,a,ok\n"
                    "c2,2026-03-01,a,ok,extra,fields\nc3,2026-03-01,a,ok\nc4,later,a,ok\n")
    con, report = load([path])
    assert quarantined(con) == [
        ("x.csv", 2, "(record)", "malformed CSV record (line 3): expected 4 fields, found 6"),
        ("x.csv", 4, "ts", "unparseable timestamp")]  # records after it keep their number
    assert (report.rows_read, report.rows_quarantined) == (4, 2)


# --- duplicates across files, directories of mixed formats -------------------------------------

def test_duplicate_exchange_id_across_files(tmp_path: Path) -> None:
    first = write_rows(tmp_path / "a.parquet", [exchange_row(1), exchange_row(2)])
    second = write_rows(tmp_path / "b.jsonl", [exchange_row(3), exchange_row(2, prompt="again")])
    con, report = load([first, second])
    assert quarantined(con) == [
        ("b.jsonl", 2, "exchange_id", f"duplicate exchange_id (first at file {first} row 2)")]
    assert column(con, "SELECT prompt FROM exchanges WHERE exchange_id = 'e2'") == [
        "prompt number 2"]
    assert (report.rows_read, report.rows_quarantined) == (4, 1)


def test_directory_of_mixed_formats(tmp_path: Path) -> None:
    data = tmp_path / "logs"
    (data / "day2").mkdir(parents=True)
    write_rows(data / "a.parquet", [exchange_row(i) for i in range(0, 3)])
    write_rows(data / "b.jsonl", [exchange_row(i) for i in range(3, 5)])
    write_rows(data / "day2" / "c.jsonl.gz", [exchange_row(i) for i in range(5, 9)])
    write_rows(data / "day2" / "d.csv", [exchange_row(9), exchange_row(0, prompt="dup")])
    (data / "_SUCCESS").write_text("")
    (data / ".a.parquet.crc").write_bytes(b"\x00")
    (data / "README.txt").write_text("not data")
    con, report = load([data])
    rep = report.tables["exchanges"]
    assert [Path(f).name for f in rep.files] == ["a.parquet", "b.jsonl", "c.jsonl.gz", "d.csv"]
    assert (rep.rows_read, rep.rows_accepted, rep.rows_quarantined) == (11, 10, 1)
    assert quarantined(con) == [("d.csv", 2, "exchange_id",
                                 f"duplicate exchange_id (first at file {data / 'a.parquet'} "
                                 "row 1)")]
    assert column(con, "SELECT count(DISTINCT exchange_id) FROM exchanges") == [10]


# --- timestamps --------------------------------------------------------------------------------

NOON = datetime(2026, 3, 1, 12, 0, 0)  # naive = UTC, as DuckDB's TIMESTAMP returns it
NOON_MS = int(NOON.replace(tzinfo=UTC).timestamp() * 1000)


def test_every_timestamp_form_gives_the_same_utc_value(tmp_path: Path) -> None:
    tokyo = timezone(timedelta(hours=9))
    write_parquet(tmp_path / "naive.parquet", {
        "exchange_id": ["pq-naive"], "ts": pa.array([NOON], pa.timestamp("us")),
        "account_id": ["a"], "prompt": ["p"]})
    write_parquet(tmp_path / "tz.parquet", {
        "exchange_id": ["pq-tz"],
        "ts": pa.array([NOON.replace(tzinfo=UTC).astimezone(tokyo)],
                       pa.timestamp("ms", tz="Asia/Tokyo")),
        "account_id": ["a"], "prompt": ["p"]})
    write_parquet(tmp_path / "epoch.parquet", {
        "exchange_id": ["pq-epoch"], "ts": pa.array([NOON_MS], pa.int64()),
        "account_id": ["a"], "prompt": ["p"]})
    forms = {"iso-z": "2026-03-01T12:00:00Z", "iso-offset": "2026-03-01T21:00:00+09:00",
             "iso-neg-offset": "2026-03-01T07:00:00-05:00", "iso-naive": "2026-03-01T12:00:00",
             "space-naive": "2026-03-01 12:00:00", "epoch-str": str(NOON_MS),
             "epoch-int": NOON_MS}
    rows = [{"exchange_id": k, "ts": v, "account_id": "a", "prompt": "p"}
            for k, v in forms.items()]
    write_rows(tmp_path / "forms.jsonl", rows)
    write_rows(tmp_path / "forms.csv", [{**r, "exchange_id": f"csv-{r['exchange_id']}"}
                                        for r in rows])
    con, report = load([tmp_path])
    assert report.rows_quarantined == 0
    values = dict(con.execute("SELECT exchange_id, ts FROM exchanges").fetchall())
    assert len(values) == 3 + 2 * len(forms)
    assert set(values.values()) == {NOON}


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-03-01", datetime(2026, 3, 1)),
    ("2026-03-01T12:00:00.250Z", NOON + timedelta(milliseconds=250)),
    (str(NOON_MS + 250), NOON + timedelta(milliseconds=250)),
    ("0", datetime(1970, 1, 1)),
])
def test_timestamp_precision_and_date_only(tmp_path: Path, value: str,
                                           expected: datetime) -> None:
    con, report = load([write_rows(tmp_path / "x.csv", [exchange_row(1, ts=value)])])
    assert report.rows_quarantined == 0
    assert column(con, "SELECT ts FROM exchanges") == [expected]


@pytest.mark.parametrize("value", ["2026-13-01", "2026-03-01T25:00:00Z", "yesterday", "12:00",
                                   "1.5e12", "2026-02-30"])
def test_unparseable_timestamps_quarantined(tmp_path: Path, value: str) -> None:
    con, _ = load([write_rows(tmp_path / "x.jsonl", [exchange_row(1, ts=value)])])
    assert quarantined(con) == [("x.jsonl", 1, "ts", "unparseable timestamp")]


# --- types and optional columns -----------------------------------------------------------------

def _view_types(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    return {name: dtype for name, dtype, *_ in con.execute(f"DESCRIBE {view}").fetchall()}


def test_optional_columns_absent_are_typed_nulls(tmp_path: Path) -> None:
    con, report = load([write_rows(tmp_path / "x.jsonl", [exchange_row(1)])])
    for table in (EXCHANGES, ACCOUNTS, RELEASES):
        assert _view_types(con, table.name) == {c.name: SQL_TYPE[c.kind] for c in table.columns}
    row = con.execute("SELECT * FROM exchanges").fetchone()
    assert row[:4] == ("e1", NOON, "acct1", "prompt number 1")
    assert set(row[4:]) == {None}
    assert report.tables["exchanges"].columns_present == [
        "exchange_id", "ts", "account_id", "prompt"]
    assert column(con, "SELECT count(*) FROM accounts") == [0]


def test_natively_typed_parquet_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "typed.parquet", {
        "exchange_id": ["t1", "t2"],
        "ts": pa.array([NOON, NOON], pa.timestamp("ns")),
        "account_id": ["a", "b"], "prompt": [None, "hello"],
        "asn": pa.array([64500, None], pa.int32()),
        "n_messages": pa.array([3.0, 4.5], pa.float64()),
        "has_image": pa.array([True, False]), "thinking": pa.array([None, True], pa.bool_()),
        "tool_names": pa.array([["a", "b"], []], pa.list_(pa.string())),
        "ignored_extra": [1, 2],
    })
    con, _ = load([path])
    assert quarantined(con) == [("typed.parquet", 2, "n_messages", "not an integer")]
    assert con.execute("SELECT exchange_id, prompt, asn, n_messages, has_image, thinking, "
                       "tool_names FROM exchanges").fetchall() == [
        ("t1", None, 64500, 3, True, None, ["a", "b"])]
    assert "ignored_extra" not in _view_types(con, "exchanges")


def test_missing_required_column_raises_input_error(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "x.parquet", [{"exchange_id": "1", "ts": "2026-03-01",
                                                "prompt": "p"}])
    with pytest.raises(InputError) as err:
        load([path])
    assert (err.value.file, err.value.column) == (str(path), "account_id")


# --- accounts and releases --------------------------------------------------------------------

def test_accounts_duplicates_and_bad_rows_quarantined(tmp_path: Path) -> None:
    accounts = write_rows(tmp_path / "accounts.csv", [
        {"account_id": "a", "created_at": "2026-01-05", "signup_ip": "198.51.100.7",
         "signup_asn": "64501", "verification_path": "research", "allowlisted": "false"},
        {"account_id": "b", "created_at": "not a date"},
        {"account_id": "a", "created_at": "2026-02-01"},
        {"account_id": "c", "signup_ip": "999.0.0.1"},
        {"account_id": "d", "allowlisted": "perhaps"},
        {"account_id": "e", "signup_asn": "AS64500"},
        {"account_id": "", "created_at": "2026-01-05"},
        {"account_id": "f", "allowlisted": "TRUE"},
    ])
    ex = write_rows(tmp_path / "ex.jsonl", [exchange_row(1)])
    con, report = load([ex], accounts=[accounts])
    assert quarantined(con, "accounts") == [
        ("accounts.csv", 2, "created_at", "unparseable timestamp"),
        ("accounts.csv", 3, "account_id", f"duplicate account_id (first at file {accounts} row 1)"),
        ("accounts.csv", 4, "signup_ip", "invalid IP address"),
        ("accounts.csv", 5, "allowlisted", "not a boolean"),
        ("accounts.csv", 6, "signup_asn", "not an integer"),
        ("accounts.csv", 7, "account_id", "missing account_id"),
    ]
    rep = report.tables["accounts"]
    assert (rep.rows_read, rep.rows_accepted, rep.rows_quarantined) == (8, 2, 6)
    assert con.execute("SELECT account_id, created_at, signup_asn, allowlisted FROM accounts "
                       "ORDER BY 1").fetchall() == [
        ("a", datetime(2026, 1, 5), 64501, False), ("f", None, None, True)]
    assert (report.rows_read, report.rows_quarantined) == (9, 6)


def test_releases_loaded(tmp_path: Path) -> None:
    releases = write_rows(tmp_path / "releases.jsonl", [
        {"model": "atlas-3", "released_at": "2026-02-10T17:00:00Z"},
        {"model": "atlas-3-mini", "released_at": 1770742800000},
        {"model": "atlas-4", "released_at": "soon"},
    ])
    ex = write_rows(tmp_path / "ex.jsonl", [exchange_row(1)])
    con, report = load([ex], releases=[releases])
    assert con.execute("SELECT model, released_at FROM releases ORDER BY 1").fetchall() == [
        ("atlas-3", datetime(2026, 2, 10, 17)), ("atlas-3-mini", datetime(2026, 2, 10, 17))]
    assert quarantined(con, "releases") == [
        ("releases.jsonl", 3, "released_at", "unparseable timestamp")]
    assert report.tables["releases"].rows_accepted == 2


def test_releases_missing_column_is_input_error(tmp_path: Path) -> None:
    releases = write_rows(tmp_path / "releases.csv", [{"model": "atlas-3"}])
    ex = write_rows(tmp_path / "ex.jsonl", [exchange_row(1)])
    with pytest.raises(InputError, match="released_at"):
        load([ex], releases=[releases])


def test_adapter_source_goes_through_the_same_checks() -> None:
    def source():
        yield "gateway.log", pa.table({"exchange_id": ["g1", "g2", "g1"],
                                       "ts": ["2026-03-01T12:00:00Z", "bad", "2026-03-01"],
                                       "account_id": ["a", "a", "a"], "prompt": ["p", "q", "r"]})

    con, report = load(exchange_source=source)
    assert quarantined(con) == [
        ("gateway.log", 2, "ts", "unparseable timestamp"),
        ("gateway.log", 3, "exchange_id", "duplicate exchange_id (first at file gateway.log "
                                          "row 1)")]
    assert report.tables["exchanges"].rows_accepted == 1


# --- the CLI: exit codes, one-line errors, quarantine file, database -------------------------

def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_missing_account_id_column(tmp_path: Path, cli, fmt: str) -> None:
    path = write_rows(tmp_path / f"no_account.{fmt}",
                      [{"exchange_id": "1", "ts": "2026-03-01", "prompt": "p"}])
    _one_line_error(cli("validate", path), str(path), "'account_id'")


def test_cli_missing_column_in_one_file_of_a_directory(tmp_path: Path, cli) -> None:
    write_rows(tmp_path / "a.jsonl", [exchange_row(1)])
    bad = write_rows(tmp_path / "b.csv", [{"exchange_id": "2", "account_id": "a",
                                           "prompt": "p"}])
    _one_line_error(cli("validate", tmp_path), str(bad), "'ts'")


def test_cli_corrupt_parquet(tmp_path: Path, cli) -> None:
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet at all PAR1")
    _one_line_error(cli("validate", garbage), str(garbage), "unreadable")
    good = write_rows(tmp_path / "good.parquet", [exchange_row(i) for i in range(50)])
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _one_line_error(cli("validate", truncated), str(truncated), "unreadable")


@pytest.mark.parametrize("name", ["x.jsonl.gz", "x.csv.gz"])
def test_cli_corrupt_gzip(tmp_path: Path, cli, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    _one_line_error(cli("validate", path), str(path), "unreadable")


def test_cli_unknown_file_type(tmp_path: Path, cli) -> None:
    path = tmp_path / "logs.xlsx"
    path.write_bytes(b"PK\x03\x04")
    _one_line_error(cli("validate", path), str(path), "unknown file type")


def test_cli_nonexistent_path(tmp_path: Path, cli) -> None:
    missing = tmp_path / "nowhere" / "x.parquet"
    _one_line_error(cli("validate", missing), str(missing), "no such file")


def test_cli_directory_without_data_files(tmp_path: Path, cli) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    _one_line_error(cli("validate", tmp_path), str(tmp_path), "no .parquet")


def test_cli_empty_file(tmp_path: Path, cli) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    _one_line_error(cli("validate", path), str(path), "no records")


def test_cli_validate_mixed_file(tmp_path: Path, cli) -> None:
    path = write_rows(tmp_path / "mixed.jsonl", [rec for rec, _ in MIXED])
    qpath = tmp_path / "out" / "quarantine.parquet"
    result = cli("validate", path, "--quarantine", qpath)
    assert result.exit_code == 1, result.output
    n_bad = sum(bad is not None for _, bad in MIXED)
    assert (f"rows read {len(MIXED)} = accepted {len(MIXED) - n_bad} + quarantined {n_bad}"
            in result.stdout)
    written = pq.read_table(qpath)
    assert written.column_names == ["table", "file", "row", "column", "reason"]
    assert written.num_rows == n_bad
    assert written.column("row").to_pylist() == [
        i for i, (_, bad) in enumerate(MIXED, start=1) if bad]
    assert set(written.column("file").to_pylist()) == {str(path)}


def test_cli_validate_clean_file_exits_zero(tmp_path: Path, cli) -> None:
    path = write_rows(tmp_path / "clean.csv", [exchange_row(i) for i in range(5)])
    qpath = tmp_path / "q.parquet"
    result = cli("validate", path, "--quarantine", qpath)
    assert result.exit_code == 0, result.output
    assert "rows read 5 = accepted 5 + quarantined 0" in result.stdout
    assert pq.read_table(qpath).num_rows == 0


def test_cli_ingest_writes_database(tmp_path: Path, cli) -> None:
    ex = write_rows(tmp_path / "ex.parquet", [exchange_row(1), exchange_row(2, ts="bad"),
                                              exchange_row(3)])
    acc = write_rows(tmp_path / "acc.jsonl", [{"account_id": "acct1", "country": "DE"},
                                              {"account_id": "acct1"}])
    rel = write_rows(tmp_path / "rel.csv", [{"model": "atlas-3", "released_at": "2026-02-01"}])
    db = tmp_path / "store.duckdb"
    result = cli("ingest", ex, "--accounts", acc, "--releases", rel, "--db", db)
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(db), read_only=True) as store:
        tables = set(column(store, "SELECT table_name FROM information_schema.tables"))
        assert tables == {"exchanges", "accounts", "releases", "quarantine"}
        assert column(store, "SELECT exchange_id FROM exchanges ORDER BY 1") == ["e1", "e3"]
        assert column(store, "SELECT country FROM accounts") == ["DE"]
        assert column(store, "SELECT released_at FROM releases") == [datetime(2026, 2, 1)]
        assert store.execute('SELECT "table", "row", "column" FROM quarantine ORDER BY 1'
                             ).fetchall() == [("accounts", 2, "account_id"),
                                              ("exchanges", 2, "ts")]
    # Ingesting again replaces the tables instead of failing or appending.
    assert cli("ingest", ex, "--db", db).exit_code == 0
    with duckdb.connect(str(db), read_only=True) as store:
        assert column(store, "SELECT count(*) FROM exchanges") == [2]
        assert column(store, "SELECT count(*) FROM accounts") == [0]


def test_installed_entry_point_prints_one_line(tmp_path: Path) -> None:
    """The real console script, in a real process: one line on stderr, exit 2, no traceback."""
    exe = Path(sys.executable).with_name("distillguard")
    assert exe.exists(), "distillguard is not installed in this environment (./dev setup)"
    path = write_rows(tmp_path / "no_account.parquet",
                      [{"exchange_id": "1", "ts": "2026-03-01", "prompt": "p"}])
    proc = subprocess.run([str(exe), "validate", str(path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: file {path}, column 'account_id': missing required column of the "
        "exchanges table"]
    assert "Traceback" not in proc.stdout + proc.stderr
