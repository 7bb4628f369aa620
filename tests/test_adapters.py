"""Log-format adapters: fixtures written from each format's public documentation map to the
expected contract rows; unmappable fields fail clearly; canonical output passes validate."""

from __future__ import annotations

import gzip
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from distillguard.errors import InputError
from distillguard.ingest.adapters import ADAPTERS, AdapterOptions, get, to_contract_parquet

DATA = Path(__file__).parent / "data" / "adapters"
OTEL = AdapterOptions(account_attribute="tenant.id")


def rows(fmt: str, paths: list[Path], options: AdapterOptions = AdapterOptions()
         ) -> list[dict[str, Any]]:
    return [r for _, t in ADAPTERS[fmt].read(paths, options) for r in t.to_pylist()]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def pick(row: dict[str, Any], *cols: str) -> tuple[Any, ...]:
    return tuple(row[c] for c in cols)


# --- otel -----------------------------------------------------------------------------------


def test_otel_maps_genai_inference_spans_only() -> None:
    out = rows("otel", [DATA / "otel_genai.jsonl"], OTEL)
    # HTTP, execute_tool and embeddings spans are not exchanges.
    assert [r["exchange_id"] for r in out] == [
        "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174",
        "0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7",
        "4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8",
    ]
    chat, legacy, structured = out
    assert chat == {
        "exchange_id": "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174",
        "ts": ts("2025-11-15T09:46:40.123456"),
        "account_id": "acct-001",  # resource attribute
        "prompt": "And what does this sign say?",  # final user turn, text parts only
        "model": "gpt-4o",
        "ip": "203.0.113.7",
        "user_agent": "OpenAI/Python 1.54.0",
        "system_prompt": "You are a helpful travel assistant.",
        "n_messages": 4,
        "tool_names": ["get_weather"],
        "has_image": True,
        "thinking": False,
        "input_tokens": 97,
        "output_tokens": 52,
        "response": "It is rainy, 57F. The sign says 'Sortie'.",
        "status": "ok",
    }
    # Deprecated gen_ai.system + prompt_tokens/completion_tokens; error status; no content.
    assert pick(legacy, "account_id", "model", "input_tokens", "output_tokens", "thinking",
                "status", "prompt", "n_messages", "tool_names") == (
        "acct-002", "claude-sonnet-4-5", 1200, 800, True, "error", None, None, None)
    # Structured (arrayValue/kvlistValue) messages; account from a span attribute.
    assert pick(structured, "account_id", "prompt", "n_messages", "has_image", "thinking",
                "status") == ("acct-003", "Write a haiku about autumn.", 1, False, None, "ok")


def test_otel_single_pretty_document_and_gzip_read_the_same(tmp_path: Path) -> None:
    docs = [json.loads(line) for line in (DATA / "otel_genai.jsonl").read_text().splitlines()]
    merged = {"resourceSpans": [rs for d in docs for rs in d["resourceSpans"]]}
    pretty = tmp_path / "export.json"
    pretty.write_text(json.dumps(merged, indent=2))
    gz = tmp_path / "export.jsonl.gz"
    gz.write_bytes(gzip.compress((DATA / "otel_genai.jsonl").read_bytes()))
    expected = rows("otel", [DATA / "otel_genai.jsonl"], OTEL)
    assert rows("otel", [pretty], OTEL) == expected
    assert rows("otel", [gz], OTEL) == expected


def test_otel_needs_an_account_attribute() -> None:
    with pytest.raises(InputError, match="--account-attribute"):
        rows("otel", [DATA / "otel_genai.jsonl"], AdapterOptions())


def test_otel_account_attribute_absent_from_data_is_an_error() -> None:
    with pytest.raises(InputError, match="none of the first records has the account") as err:
        rows("otel", [DATA / "otel_genai.jsonl"], AdapterOptions(account_attribute="org.id"))
    assert err.value.file == str(DATA / "otel_genai.jsonl") and err.value.column == "org.id"


@pytest.mark.parametrize("batch_rows", [1, 50_000])
def test_rows_missing_the_account_are_left_for_quarantine(batch_rows: int) -> None:
    """Whatever the chunking, one row without an account is not an error by itself."""
    out = rows("openai-jsonl", [DATA / "openai_requests.jsonl"],
               AdapterOptions(account_attribute="org_id", batch_rows=batch_rows))
    assert [r["account_id"] for r in out] == ["org-acme", None, None]


def test_otel_error_row_is_the_failing_span(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text((DATA / "otel_genai.jsonl").read_text().replace(
        '"startTimeUnixNano": "1763200010500000000"', '"startTimeUnixNano": "soon"'))
    with pytest.raises(InputError) as err:
        rows("otel", [bad], OTEL)
    assert (err.value.row, err.value.column) == (2, "startTimeUnixNano")


def test_otel_unparseable_messages_name_file_row_and_attribute(tmp_path: Path) -> None:
    text = (DATA / "otel_genai.jsonl").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text.replace('"stringValue": "[{\\"role\\": \\"user\\"',
                                '"stringValue": "[{role: user', 1))
    with pytest.raises(InputError) as err:
        rows("otel", [bad], OTEL)
    assert (err.value.file, err.value.row, err.value.column) == (
        str(bad), 1, "gen_ai.input.messages")


# --- openai-jsonl / anthropic-jsonl ---------------------------------------------------------


def test_openai_jsonl_chat_errors_and_responses_api() -> None:
    chat, limited, responses = rows("openai-jsonl", [DATA / "openai_requests.jsonl"])
    assert chat == {
        "exchange_id": "req_01", "ts": ts("2025-11-15T09:46:40.250"), "account_id": "org-acme",
        "prompt": "Now solve the equation in this photo.", "org_id": "org-acme",
        "api_key_id": "key_a1", "model": "gpt-4o", "ip": "198.51.100.23",
        "user_agent": "OpenAI/Python 1.54.0", "system_prompt": "You are a meticulous math tutor.",
        "n_messages": 4, "tool_names": ["calculator"], "has_image": True, "thinking": True,
        "input_tokens": 120, "output_tokens": 40, "response": "x = 3", "status": "ok",
    }
    # No id/timestamp: response.id and response.created (unix seconds) are used.
    assert pick(limited, "exchange_id", "ts", "status", "system_prompt", "tool_names",
                "thinking", "response") == (
        "chatcmpl-C1x", ts("2025-11-15T09:47:40"), "rate_limited", "Answer tersely.", [],
        False, None)
    assert pick(responses, "ts", "account_id", "prompt", "system_prompt", "n_messages",
                "tool_names", "thinking", "input_tokens", "output_tokens", "response") == (
        ts("2025-11-15T09:48:40"), "4242", "Say hello.", "Reply in French.", 1,
        ["lookup_word"], True, 36, 87, "Bonjour !")


def test_anthropic_jsonl_blocks_thinking_cache_tokens_and_errors() -> None:
    review, overloaded = rows("anthropic-jsonl", [DATA / "anthropic_requests.jsonl"])
    assert review == {
        "exchange_id": "req_a1", "ts": ts("2025-11-15T10:00:00"), "account_id": "acct-9",
        "prompt": "Tests pass. Approve?", "org_id": None, "api_key_id": "key_9",
        "model": "claude-sonnet-4-5", "ip": "2001:db8::1",
        "user_agent": "Anthropic/Python 0.69.0",
        "system_prompt": "You are a careful code reviewer.", "n_messages": 3,
        "tool_names": ["run_tests", "web_search"], "has_image": True, "thinking": True,
        "input_tokens": 2095 + 1800, "output_tokens": 503, "response": "Approved.",
        "status": "ok",
    }
    assert pick(overloaded, "system_prompt", "thinking", "status", "response") == (
        "Be brief.", False, "error", None)


def test_account_field_is_a_dotted_path() -> None:
    out = rows("anthropic-jsonl", [DATA / "anthropic_requests.jsonl"],
               AdapterOptions(account_attribute="request.metadata.user_id"))
    assert [r["account_id"] for r in out] == ["end-user-5", None]


@pytest.mark.parametrize(("batch_rows", "workers"), [(50_000, 1), (2, 1), (1, 2)])
def test_bad_timestamp_names_file_row_and_field(tmp_path: Path, batch_rows: int,
                                                workers: int) -> None:
    bad = tmp_path / "log.jsonl"
    lines = (DATA / "openai_requests.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"timestamp": 1763200120000', '"timestamp": "yesterday"')
    bad.write_text("\n\n".join(lines))  # blank lines do not count as records
    with pytest.raises(InputError) as err:  # row counts across chunks and workers
        rows("openai-jsonl", [bad], AdapterOptions(batch_rows=batch_rows, workers=workers))
    assert (err.value.file, err.value.row, err.value.column) == (str(bad), 3, "timestamp")
    assert "yesterday" in str(err.value)


def test_invalid_json_line_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "log.jsonl"
    bad.write_text('{"id": "x"}\n{"id": \n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        rows("anthropic-jsonl", [bad])


def test_batches_keep_one_label_and_source_order() -> None:
    path = DATA / "openai_requests.jsonl"
    tables = list(ADAPTERS["openai-jsonl"].read([path], AdapterOptions(batch_rows=2)))
    assert [(label, t.num_rows) for label, t in tables] == [(str(path), 2), (str(path), 1)]
    assert pa.concat_tables(t for _, t in tables).to_pylist() == rows("openai-jsonl", [path])


def test_worker_processes_give_the_same_tables() -> None:
    paths = [DATA / "otel_genai.jsonl", DATA / "otel_genai.jsonl"]
    serial = list(ADAPTERS["otel"].read(paths, AdapterOptions("tenant.id", batch_rows=1)))
    parallel = list(ADAPTERS["otel"].read(paths, AdapterOptions("tenant.id", batch_rows=1,
                                                                workers=2)))
    assert len(serial) == 4  # one table per export line that holds inference spans
    assert [(label, t.to_pylist()) for label, t in parallel] == [
        (label, t.to_pylist()) for label, t in serial]


def test_directory_input_reads_matching_files_sorted(tmp_path: Path) -> None:
    shutil.copy(DATA / "anthropic_requests.jsonl", tmp_path / "b.jsonl")
    shutil.copy(DATA / "anthropic_requests.jsonl", tmp_path / "a.jsonl")
    (tmp_path / "_SUCCESS").write_text("")
    labels = [label for label, _ in ADAPTERS["anthropic-jsonl"].read([tmp_path], AdapterOptions())]
    assert labels == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]


def test_no_input_files_is_an_error() -> None:
    with pytest.raises(InputError, match="no input files"):
        rows("openai-jsonl", [])


def test_unknown_format_lists_known_ones() -> None:
    with pytest.raises(InputError, match="otel, litellm, openai-jsonl, anthropic-jsonl"):
        get("splunk")


# --- litellm --------------------------------------------------------------------------------

LITELLM_JSONL = DATA / "litellm_spendlogs.jsonl"
KEY_A = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
KEY_B = "5a3b0f7e2c9d4e1f8a6b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"


def test_litellm_jsonl_stored_and_unstored_prompts() -> None:
    stored, unstored, limited, legacy = rows("litellm", [LITELLM_JSONL])
    assert stored == {
        "exchange_id": "chatcmpl-9f3c1a2b", "ts": ts("2025-11-15T11:00:00.123"),
        "account_id": KEY_A, "prompt": "Write an add function.", "org_id": "org-1",
        "api_key_id": KEY_A, "model": "gpt-4o", "ip": "10.0.0.5",
        "system_prompt": "You write Python.", "n_messages": 2, "tool_names": ["run_python"],
        "has_image": False, "thinking": False, "input_tokens": 150, "output_tokens": 30,
        "response": "def add(a, b):\n    return a + b", "status": "ok",
    }
    # store_prompts_in_spend_logs off: text columns are null (unknown), never guessed.
    assert pick(unstored, "prompt", "response", "n_messages", "tool_names", "has_image",
                "thinking", "input_tokens", "status") == (
        None, None, None, None, None, None, 40, "ok")
    assert pick(limited, "account_id", "org_id", "ip", "status") == (
        KEY_B, None, "192.0.2.44", "rate_limited")
    # Older releases stored the request messages in `messages`; no status column value.
    assert pick(legacy, "prompt", "n_messages", "has_image", "response", "status", "org_id",
                "ip") == ("Describe this chart.", 1, True, "Sales rise in Q3.", None, None, None)


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "csv.gz"])
def test_litellm_csv_export(tmp_path: Path, gz: bool) -> None:
    path = DATA / "litellm_spendlogs.csv"
    if gz:
        path = tmp_path / "spend.csv.gz"
        path.write_bytes(gzip.compress((DATA / "litellm_spendlogs.csv").read_bytes()))
    unstored, grading = rows("litellm", [path])
    assert pick(unstored, "exchange_id", "ts", "account_id", "prompt", "org_id", "status") == (
        "chatcmpl-aa01", ts("2025-11-15T12:00:00.5"), KEY_A, None, "org-1", "ok")
    assert pick(grading, "ts", "prompt", "system_prompt", "thinking", "n_messages", "org_id",
                "input_tokens", "status") == (
        ts("2025-11-15T12:00:02"), "Question: 2+2?\nAnswer: 5",
        "Grade the answer from 1 to 10.", True, 1, None, 200, "error")


def test_litellm_account_column_or_json_path() -> None:
    by_user = rows("litellm", [LITELLM_JSONL], AdapterOptions(account_attribute="user"))
    assert [r["account_id"] for r in by_user] == ["user-a", "user-a", None, "user-b"]
    by_alias = rows("litellm", [LITELLM_JSONL],
                    AdapterOptions(account_attribute="metadata.user_api_key_alias"))
    assert [r["account_id"] for r in by_alias] == ["acme-prod", "acme-prod", "scraper-7", None]


def test_litellm_unmappable_request_body_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "spend.jsonl"
    lines = LITELLM_JSONL.read_text().splitlines()
    record = json.loads(lines[1])
    record["proxy_server_request"] = {"model": "gpt-4o", "messages": "hello"}
    bad.write_text("\n".join([lines[0], json.dumps(record)]))
    with pytest.raises(InputError) as err:
        rows("litellm", [bad])
    assert (err.value.row, err.value.column) == (2, "proxy_server_request.messages")


def test_litellm_csv_without_key_columns_is_an_error(tmp_path: Path) -> None:
    odd = tmp_path / "spend.csv"
    odd.write_text("id,time\n1,2025-01-01\n")
    with pytest.raises(InputError, match=r"lacks LiteLLM_SpendLogs columns \['request_id', "
                                         r"'startTime'\]"):
        rows("litellm", [odd])


def test_litellm_rejects_unknown_file_type(tmp_path: Path) -> None:
    odd = tmp_path / "spend.xlsx"
    odd.write_text("")
    with pytest.raises(InputError, match=r"\.csv or \.jsonl"):
        rows("litellm", [odd])


# --- canonical output passes the core validation -----------------------------------------

CASES = [
    ("otel", [DATA / "otel_genai.jsonl"], OTEL),
    ("litellm", [LITELLM_JSONL, DATA / "litellm_spendlogs.csv"], AdapterOptions()),
    ("openai-jsonl", [DATA / "openai_requests.jsonl"], AdapterOptions()),
    ("anthropic-jsonl", [DATA / "anthropic_requests.jsonl"], AdapterOptions()),
]


@pytest.mark.parametrize(("fmt", "paths", "options"), CASES, ids=[c[0] for c in CASES])
def test_canonical_parquet_passes_validate(fmt: str, paths: list[Path], options: AdapterOptions,
                                           tmp_path: Path) -> None:
    from distillguard.cli import app

    out = tmp_path / "exchanges.parquet"
    converted = to_contract_parquet(fmt, paths, options, out)
    expected = rows(fmt, paths, options)
    assert converted.rows == len(expected) == pq.read_metadata(out).num_rows
    assert converted.rows_without_prompt == sum(r["prompt"] is None for r in expected)
    quarantine = tmp_path / "quarantine.parquet"
    result = CliRunner().invoke(app, ["validate", str(out), "--quarantine", str(quarantine)])
    assert result.exit_code == 0, result.output
    assert pq.read_table(quarantine).num_rows == 0


@pytest.mark.parametrize(("fmt", "paths", "options"), CASES, ids=[c[0] for c in CASES])
def test_adapter_stream_loads_without_quarantine(fmt: str, paths: list[Path],
                                                 options: AdapterOptions) -> None:
    from distillguard.ingest import load_inputs

    con = duckdb.connect()
    report = load_inputs(con, exchange_source=lambda: ADAPTERS[fmt].read(paths, options))
    assert report.rows_quarantined == 0
    assert report.rows_read == len(rows(fmt, paths, options))


def test_convert_command_writes_parquet_and_reports_missing_text(tmp_path: Path) -> None:
    from distillguard.cli import app

    out = tmp_path / "exchanges.parquet"
    result = CliRunner().invoke(app, ["convert", "--format", "litellm", str(LITELLM_JSONL),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 exchanges written" in result.output and "2 exchanges carry no prompt" in result.output
    assert pq.read_table(out).num_rows == 4
    result = CliRunner().invoke(app, ["convert", "--format", "otel", str(DATA / "otel_genai.jsonl"),
                                      "--out", str(out)])
    assert result.exit_code == 2 and "--account-attribute" in result.output


# --- litellm straight from PostgreSQL -------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on a unix socket; yields its DSN."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (scripts/setup-system.sh)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="dg-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the server")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, sock = root / "data", root
    for cmd in ([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                 "--no-sync"],
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                 f"-k {sock} -p 54329 -c listen_addresses='' -c fsync=off", "start"]):
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True)
        if done.returncode:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            pytest.fail(f"{Path(cmd[0]).name} failed: {done.stderr}{log}")
    try:
        yield f"host={sock} port=54329 user=postgres dbname=postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def spendlogs_db(postgres: str) -> str:
    import psycopg
    from psycopg.types.json import Jsonb

    records = [json.loads(line) for line in LITELLM_JSONL.read_text().splitlines()]
    json_cols = {"metadata", "request_tags", "messages", "response", "proxy_server_request"}
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute((DATA / "litellm_spendlogs.sql").read_text())
        for rec in reversed(records):  # insertion order must not matter: read by startTime
            cols = ", ".join(f'"{c}"' for c in rec)
            marks = ", ".join(["%s"] * len(rec))
            values = [Jsonb(v) if c in json_cols else v for c, v in rec.items()]
            conn.execute(f'INSERT INTO "LiteLLM_SpendLogs" ({cols}) VALUES ({marks})', values)
        # A view whose every read writes: proves the adapter's transaction is read-only.
        conn.execute("CREATE TABLE reads (at timestamptz)")
        conn.execute("CREATE FUNCTION log_read() RETURNS int LANGUAGE plpgsql AS "
                     "$$ BEGIN INSERT INTO reads VALUES (now()); RETURN 1; END $$")
        conn.execute('CREATE VIEW spy AS SELECT s.*, log_read() AS x FROM "LiteLLM_SpendLogs" s')
    return postgres


def test_litellm_postgres_matches_the_export(spendlogs_db: str) -> None:
    options = AdapterOptions(dsn=spendlogs_db, batch_rows=3)
    tables = list(ADAPTERS["litellm"].read([], options))
    assert [label for label, _ in tables] == ["postgresql:LiteLLM_SpendLogs"] * 2
    assert rows("litellm", [], options) == rows("litellm", [LITELLM_JSONL])


def test_litellm_postgres_reads_in_a_read_only_transaction(spendlogs_db: str) -> None:
    with pytest.raises(InputError, match="read-only transaction"):
        rows("litellm", [], AdapterOptions(dsn=spendlogs_db, table="spy"))


def test_litellm_postgres_missing_table_is_an_input_error(spendlogs_db: str) -> None:
    with pytest.raises(InputError, match="does not exist") as err:
        rows("litellm", [], AdapterOptions(dsn=spendlogs_db, table="public.nope"))
    assert err.value.file == "postgresql:public.nope"


def test_litellm_dsn_and_files_are_exclusive(spendlogs_db: str) -> None:
    with pytest.raises(InputError, match="not both"):
        rows("litellm", [LITELLM_JSONL], AdapterOptions(dsn=spendlogs_db))
