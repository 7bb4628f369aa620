"""Contract columns from OpenAI- and Anthropic-shaped request and response bodies.

One parser serves both APIs (and LiteLLM, which stores whichever the client sent): their
field names do not collide, so reading `system` (Anthropic), system/developer messages
(OpenAI) and `instructions` (OpenAI Responses) side by side never mixes meanings.
"""

from __future__ import annotations

from typing import Any

from distillguard.ingest.adapters.common import FieldError, as_int

TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
SYSTEM_ROLES = frozenset({"system", "developer"})
THINKING_ON = frozenset({"enabled", "adaptive"})


def content_text(content: Any, field: str) -> str:
    """Text of a message content: a string, or the text parts of a part list joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in TEXT_PARTS:
                texts.append(str(part.get("text") or ""))
        return "\n".join(texts)
    raise FieldError(field, "content must be a string or a list of parts, "
                            f"got {type(content).__name__}")


def _has_image(content: Any) -> bool:
    """An image part anywhere in a content list, including inside Anthropic tool results."""
    if not isinstance(content, list):
        return False
    for part in content:
        if isinstance(part, dict):
            if part.get("type") in IMAGE_PARTS:
                return True
            if _has_image(part.get("content")):
                return True
    return False


def _messages(body: dict[str, Any], field: str) -> list[dict[str, Any]] | None:
    """The conversation: chat `messages`, or the Responses API `input` (a string is one turn)."""
    if "messages" in body:
        messages, where = body["messages"], f"{field}.messages"
    elif "input" in body:
        messages, where = body["input"], f"{field}.input"
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
    else:
        return None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise FieldError(where, "must be a list of message objects")
    return messages


def _tool_names(body: dict[str, Any], field: str) -> list[str]:
    names = []
    for key in ("tools", "functions"):
        tools = body.get(key) or []
        if not isinstance(tools, list):
            raise FieldError(f"{field}.{key}", "must be a list of tool definitions")
        for tool in tools:
            spec = tool.get("function", tool) if isinstance(tool, dict) else None
            name = spec.get("name") if isinstance(spec, dict) else None
            if not isinstance(name, str):
                raise FieldError(f"{field}.{key}", "a tool definition has no name")
            names.append(name)
    return names


def _thinking_requested(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in THINKING_ON:
        return True
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):
        effort = effort or reasoning.get("effort")
    return isinstance(effort, str) and effort != "none"


def parse_request(body: Any, field: str = "request") -> dict[str, Any]:
    """Contract columns read from a request body; absent body -> no columns (all unknown)."""
    if body is None or body == {}:
        return {}
    if not isinstance(body, dict):
        raise FieldError(field, f"request body must be a JSON object, got {type(body).__name__}")
    out: dict[str, Any] = {
        "model": body.get("model") if isinstance(body.get("model"), str) else None,
        "tool_names": _tool_names(body, field),
        "thinking": _thinking_requested(body),
    }
    systems = []
    if body.get("system") is not None:
        systems.append(content_text(body["system"], f"{field}.system"))
    if isinstance(body.get("instructions"), str):
        systems.append(body["instructions"])
    messages = _messages(body, field)
    if messages is not None:
        where = f"{field}.messages"
        systems += [content_text(m.get("content"), where) for m in messages
                    if m.get("role") in SYSTEM_ROLES]
        users = [m for m in messages if m.get("role") == "user"]
        out["prompt"] = content_text(users[-1].get("content"), where) if users else None
        out["n_messages"] = len(messages)
        out["has_image"] = any(_has_image(m.get("content")) for m in messages)
    out["system_prompt"] = "\n\n".join(systems) if systems else None
    return out


def _response_text(body: dict[str, Any], field: str) -> str | None:
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        if isinstance(first.get("message"), dict):
            return content_text(first["message"].get("content"), f"{field}.choices")
        return first.get("text") if isinstance(first.get("text"), str) else None
    if isinstance(body.get("content"), list):  # Anthropic Messages
        return content_text(body["content"], f"{field}.content")
    if isinstance(body.get("output"), list):  # OpenAI Responses
        parts = [p for item in body["output"] if isinstance(item, dict)
                 and item.get("type") == "message" for p in item.get("content") or []]
        return content_text(parts, f"{field}.output")
    return None


def _error_status(body: dict[str, Any]) -> str | None:
    """'rate_limited' / 'error' from an OpenAI or Anthropic error body, None for a success."""
    error = body.get("error")
    if body.get("type") != "error" and not error:
        return None
    if isinstance(error, dict) and "rate_limit" in f"{error.get('type')} {error.get('code')}":
        return "rate_limited"
    return "error"


def parse_response(body: Any, field: str = "response") -> dict[str, Any]:
    """Contract columns from a response body: output text, token counts, error status."""
    if body is None or body == {}:
        return {}
    if not isinstance(body, dict):
        raise FieldError(field, f"response body must be a JSON object, got {type(body).__name__}")
    out: dict[str, Any] = {"response": _response_text(body, field)}
    status = _error_status(body)
    if status:
        out["status"] = status
    usage = body.get("usage")
    if isinstance(usage, dict):
        where = f"{field}.usage"
        inp = as_int(usage.get("prompt_tokens", usage.get("input_tokens")), where)
        if inp is not None:  # Anthropic counts cache reads/writes apart from input_tokens
            inp += sum(as_int(usage.get(k), where) or 0
                       for k in ("cache_creation_input_tokens", "cache_read_input_tokens"))
        out["input_tokens"] = inp
        out["output_tokens"] = as_int(usage.get("completion_tokens",
                                                usage.get("output_tokens")), where)
        details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
        if isinstance(details, dict):
            out["reasoning_tokens"] = as_int(details.get("reasoning_tokens"), where)
    return out


def status_from_http(code: Any, field: str) -> str | None:
    """Contract status from an HTTP status code: 2xx ok, 429 rate_limited, else error."""
    value = as_int(code, field)
    if value is None:
        return None
    if 200 <= value < 300:
        return "ok"
    return "rate_limited" if value == 429 else "error"


def exchange_columns(request: Any, response: Any, request_field: str = "request",
                     response_field: str = "response") -> dict[str, Any]:
    """Request and response columns; reasoning tokens in the response also mean thinking."""
    out = parse_request(request, request_field)
    resp = parse_response(response, response_field)
    if (resp.pop("reasoning_tokens", None) or 0) > 0:
        out["thinking"] = True
    out.update(resp)
    return out
