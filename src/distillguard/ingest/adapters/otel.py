"""otel: OTLP JSON trace exports (collector `file` exporter, SDK file exporters) of
OpenTelemetry GenAI spans, mapped per the GenAI semantic conventions.

Only inference spans become exchanges: `gen_ai.operation.name` in chat / text_completion /
generate_content, or (older instrumentations without an operation name) a span carrying
`gen_ai.provider.name` or the deprecated `gen_ai.system`. Agent, tool and embedding spans and
every non-GenAI span are skipped, so row n is the n-th inference span of the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from distillguard.errors import InputError
from distillguard.ingest.adapters.common import (
    JSON_SUFFIXES,
    Adapter,
    AdapterOptions,
    FieldError,
    as_id,
    as_int,
    expand,
    iter_lines,
    maybe_json,
    open_text,
)
from distillguard.ingest.adapters.runner import executor, map_chunk, run

INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
COLUMNS = ("exchange_id", "ts", "account_id", "prompt", "model", "ip", "user_agent",
           "system_prompt", "n_messages", "tool_names", "has_image", "thinking",
           "input_tokens", "output_tokens", "response", "status")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ERROR_CODES = frozenset({2, "2", "STATUS_CODE_ERROR"})


def any_value(value: Any) -> Any:
    """Decode an OTLP/JSON AnyValue ({"stringValue": ...}, {"intValue": "42"}, ...)."""
    if not isinstance(value, dict) or not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [any_value(v) for v in (inner or {}).get("values", [])]
    if kind == "kvlistValue":
        return attributes((inner or {}).get("values", []))
    return inner  # stringValue, boolValue, doubleValue, bytesValue (base64 text)


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP key/value list as a dict."""
    if not isinstance(kvs, list):
        return {}
    return {kv["key"]: any_value(kv.get("value")) for kv in kvs
            if isinstance(kv, dict) and "key" in kv}


def _documents(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, JSON text) of each ExportTraceServiceRequest: one a line as the file
    exporter writes them, else the whole file as one (possibly pretty-printed) document."""
    lines = iter_lines(path)
    first = next(lines, None)
    if first is None:
        return
    try:
        json.loads(first[1])
    except json.JSONDecodeError:
        with open_text(path) as fh:
            yield first[0], fh.read()
        return
    yield first
    yield from lines


def _spans(doc: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(resource attributes, span) for every span of an export request, in order."""
    if not isinstance(doc, dict) or "resourceSpans" not in doc:
        raise FieldError("resourceSpans", "not an OTLP JSON trace export")
    for rs in doc["resourceSpans"] or []:
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans") or []:
            yield from ((resource, span) for span in ss.get("spans") or [])


def is_inference(attrs: dict[str, Any]) -> bool:
    """Whether span attributes describe a model inference call."""
    op = attrs.get("gen_ai.operation.name")
    if op is not None:
        return op in INFERENCE_OPERATIONS
    return "gen_ai.provider.name" in attrs or "gen_ai.system" in attrs


def _parts_text(parts: Any, field: str) -> str:
    if not isinstance(parts, list):
        raise FieldError(field, "message parts must be a list")
    return "\n".join(str(p.get("content") or "") for p in parts
                     if isinstance(p, dict) and p.get("type") == "text")


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and (
        part.get("type") == "image" or part.get("modality") == "image"
        or str(part.get("mime_type") or "").startswith("image/"))


def _message_list(attrs: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
    messages = maybe_json(attrs.get(key), key)
    if messages is None:
        return None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise FieldError(key, "must be a list of {role, parts} messages")
    return messages


def _input_columns(attrs: dict[str, Any]) -> dict[str, Any]:
    key = "gen_ai.input.messages"
    messages = _message_list(attrs, key)
    if messages is None:
        return {}
    users = [m for m in messages if m.get("role") == "user"]
    return {
        "prompt": _parts_text(users[-1].get("parts"), key) if users else None,
        "n_messages": len(messages),
        "has_image": any(_is_image(p) for m in messages for p in m.get("parts") or []),
    }


def _system_prompt(attrs: dict[str, Any]) -> str | None:
    key = "gen_ai.system_instructions"
    parts = maybe_json(attrs.get(key), key)
    return None if parts is None else _parts_text(parts, key)


def _tool_names(attrs: dict[str, Any]) -> list[str] | None:
    key = "gen_ai.tool.definitions"
    tools = maybe_json(attrs.get(key), key)
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
        raise FieldError(key, "must be a list of tool definitions with a name")
    return [t["name"] for t in tools]


def _response(attrs: dict[str, Any]) -> str | None:
    key = "gen_ai.output.messages"
    messages = _message_list(attrs, key)
    if messages is None:
        return None
    return "\n".join(_parts_text(m.get("parts") or [], key) for m in messages)


def _first_int(attrs: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        if attrs.get(key) is not None:
            return as_int(attrs[key], key)
    return None


def _status(span: dict[str, Any], attrs: dict[str, Any]) -> str:
    if str(attrs.get("http.response.status_code")) == "429" or attrs.get("error.type") == "429":
        return "rate_limited"
    if (span.get("status") or {}).get("code") in ERROR_CODES or attrs.get("error.type"):
        return "error"
    return "ok"


def map_span(resource: dict[str, Any], span: dict[str, Any], attrs: dict[str, Any],
             account_attribute: str) -> dict[str, Any]:
    """Contract row of one inference span."""
    start_ns = as_int(span.get("startTimeUnixNano"), "startTimeUnixNano")
    if not span.get("spanId"):
        raise FieldError("spanId", "every span needs a spanId")
    if start_ns is None:
        raise FieldError("startTimeUnixNano", "every span needs a start time")
    reasoning = _first_int(attrs, "gen_ai.usage.reasoning.output_tokens")
    account = attrs.get(account_attribute, resource.get(account_attribute))
    row = {
        "exchange_id": f"{span.get('traceId', '')}-{span['spanId']}",
        "ts": EPOCH + timedelta(microseconds=start_ns // 1000),
        "account_id": as_id(account, account_attribute),
        "model": as_id(attrs.get("gen_ai.request.model"), "gen_ai.request.model"),
        "ip": as_id(attrs.get("client.address"), "client.address"),
        "user_agent": as_id(attrs.get("user_agent.original"), "user_agent.original"),
        "system_prompt": _system_prompt(attrs),
        "tool_names": _tool_names(attrs),
        "thinking": None if reasoning is None else reasoning > 0,
        "input_tokens": _first_int(attrs, "gen_ai.usage.input_tokens",
                                   "gen_ai.usage.prompt_tokens"),
        "output_tokens": _first_int(attrs, "gen_ai.usage.output_tokens",
                                    "gen_ai.usage.completion_tokens"),
        "response": _response(attrs),
        "status": _status(span, attrs),
    }
    row.update(_input_columns(attrs))
    return row


def map_document(doc: Any, account_attribute: str) -> Iterator[dict[str, Any]]:
    """Contract rows of the inference spans of one export request, lazily, so that an
    error is counted at the span that caused it."""
    try:
        for resource, span in _spans(doc):
            attrs = attributes(span.get("attributes"))
            if is_inference(attrs):
                yield map_span(resource, span, attrs, account_attribute)
    except FieldError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise FieldError("attributes", f"malformed OTLP span: {exc}") from None


def read(paths: list[Path], options: AdapterOptions) -> Iterator[tuple[str, pa.Table]]:
    """Exchanges tables from OTLP JSON files, inference spans in file order."""
    account_attribute = options.account_attribute
    if not account_attribute:
        raise InputError(
            "the otel format needs --account-attribute: OpenTelemetry has no standard "
            "attribute for the billing account (e.g. --account-attribute tenant.id)")
    map_one = partial(map_document, account_attribute=account_attribute)
    fn = partial(map_chunk, map_one=map_one, columns=COLUMNS, json_lines=True)
    with executor(options.workers) as pool:
        for path in expand(paths, JSON_SUFFIXES):
            yield from run(str(path), _documents(path), fn, options, account_attribute, pool)


ADAPTER = Adapter(
    name="otel",
    description="OTLP JSON exports of OpenTelemetry GenAI inference spans "
                "(needs --account-attribute)",
    read=read,
)
