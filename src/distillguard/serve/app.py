"""The FastAPI app: JSON API for gateways and analysts, the dashboard, auth and limits.

Everything but `/healthz` (and the login form itself) needs the token. The JSON API is
described by the OpenAPI document at `/openapi.json`; the interactive docs pages are
off because they load scripts from a CDN (the service uses no external resources).
"""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distillguard import __version__
from distillguard.contract import ACCOUNTS, EXCHANGES, RELEASES, Table
from distillguard.serve import dashboard
from distillguard.serve.auth import bearer, token_matches
from distillguard.serve.service import SEARCH_KINDS, Service, dumps

OPEN_PATHS = ("/healthz", "/login")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; "
                               "style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_JSON_TYPE = {"string": "string", "timestamp": "string", "int": "integer", "bool": "boolean",
              "list<string>": "array"}


def _schema(table: Table) -> dict[str, Any]:
    """OpenAPI request body: a JSON array of contract records."""
    props: dict[str, Any] = {}
    for c in table.columns:
        prop: dict[str, Any] = {"type": _JSON_TYPE[c.kind.value], "description": c.description}
        if c.kind.value == "list<string>":
            prop["items"] = {"type": "string"}
        if c.kind.value == "timestamp":
            prop["description"] = "ISO-8601 UTC or integer epoch milliseconds"
        props[c.name] = prop
    item = {"type": "object", "properties": props, "required": table.required}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": item}}}}}


async def _json_list(request: Request, max_bytes: int, max_items: int) -> list[Any]:
    """The request body as a JSON array, refusing oversized bodies before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"request body larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPException(413, f"request body larger than {max_bytes} bytes")
    try:
        records = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses lone surrogates and integers beyond 64 bits, which the record
        # checks answer per field: read such bodies again with the standard parser.
        try:
            records = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(records, list):
        raise HTTPException(422, "body must be a JSON array of records")
    if len(records) > max_items:
        raise HTTPException(413, f"batch of {len(records)} records; at most {max_items}")
    return records


def _answer(result: dict[str, Any], rejected: int) -> Response:
    """200 when every record was taken; 422 (naming each bad field) when some were not.
    The good records of a partly bad batch are stored either way."""
    if rejected:
        fields = sorted({str(s.get("field")) for s in result.get("events",
                                                                 result.get("records", []))
                         if s["status"] == "rejected"})
        result["detail"] = f"{rejected} record(s) rejected; fields: {', '.join(fields)}"
    return Response(dumps(result), status_code=422 if rejected else 200,
                    media_type="application/json")


class Guard:
    """The token check and the security headers, as plain ASGI middleware: FastAPI's
    `@app.middleware("http")` costs a task and a stream per request, which showed in
    the events endpoint's latency."""

    def __init__(self, app: ASGIApp, token: str, cookie_name: str) -> None:
        self.app, self.token, self.cookie_name = app, token, cookie_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path not in OPEN_PATHS:
            request = Request(scope)
            header = request.headers.get("authorization")
            given = bearer(header) or request.cookies.get(self.cookie_name)
            if not token_matches(self.token, given):
                if path.startswith("/v1/") or path == "/openapi.json" or header:
                    refusal: Response = JSONResponse(
                        {"detail": "missing or wrong token"}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})
                else:
                    refusal = RedirectResponse("/login", status_code=303)
                await refusal(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(db: Path | str, token: str, cfg: dict[str, Any],
               write_files: bool = True) -> FastAPI:
    """The service over the state database DB, protected by TOKEN."""
    if not token:
        raise ValueError("a token is required")
    s = cfg["serve"]
    holder: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        holder["service"] = Service(db, cfg, write_files)
        # The imports (pandas, ibis, matplotlib ...) leave millions of objects that every
        # full garbage collection walked: pauses of ~0.1-0.25 s, the worst latencies.
        # Frozen, collections only see what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            holder.pop("service").close()

    app = FastAPI(title="distillguard", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  description="Online scoring of API accounts for distillation campaigns, "
                              "and the dashboard over its state. Auth: `Authorization: "
                              "Bearer <token>` on everything but /healthz.")
    app.state.cfg = cfg

    def service() -> Service:
        return holder["service"]

    app.state.service = service

    app.add_middleware(Guard, token=token, cookie_name=s["cookie_name"])

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness; no token needed, tells nothing about the state."""
        return {"status": "ok"}

    @app.post("/v1/events", tags=["gateway"], openapi_extra=_schema(EXCHANGES))
    async def post_events(request: Request, durable: bool = Query(
            False, description="answer only once the events are committed to the state "
                               "database (else they are within the next group commit, "
                               "~0.1 s)")) -> Response:
        """Exchange events (contract columns); a decision per account of the batch.

        Each record gets a status (`accepted`, `duplicate`, `rejected` with `field` and
        `error`); `decisions` maps each account of the good records to `decision`
        (allow / watch / throttle / block), `reasons`, `campaign_id` and `score`.
        """
        records = await _json_list(request, int(s["max_body_bytes"]),
                                   int(s["max_batch_events"]))
        svc = service()
        if durable or svc.linker.inline:  # waits for DuckDB: off the event loop
            result = await run_in_threadpool(svc.post_events, records, durable)
        else:  # in memory (but for one small query on a batch with an odd record): a
            result = svc.post_events(records)  # thread hop would cost more than it saves
        return _answer(result, result["rejected"])

    @app.post("/v1/accounts", tags=["gateway"], openapi_extra=_schema(ACCOUNTS))
    async def post_accounts(request: Request) -> Response:
        """Account records (contract `accounts` columns), upserted by account_id."""
        records = await _json_list(request, int(s["max_body_bytes"]),
                                   int(s["max_batch_events"]))
        result = await run_in_threadpool(service().post_table, ACCOUNTS, records)
        return _answer(result, result["rejected"])

    @app.post("/v1/releases", tags=["gateway"], openapi_extra=_schema(RELEASES))
    async def post_releases(request: Request) -> Response:
        """Model launches (contract `releases` columns)."""
        records = await _json_list(request, int(s["max_body_bytes"]),
                                   int(s["max_batch_events"]))
        result = await run_in_threadpool(service().post_table, RELEASES, records)
        return _answer(result, result["rejected"])

    @app.get("/v1/campaigns", tags=["analyst"])
    def campaigns(earlier: bool = Query(False, description="campaigns of earlier runs "
                                                           "instead of the latest one's")
                  ) -> Response:
        """Campaigns of the latest linking run, strongest first."""
        return Response(dumps(service().campaigns(current=not earlier)),
                        media_type="application/json")

    @app.get("/v1/campaigns/{campaign_id}", tags=["analyst"])
    def campaign(campaign_id: str) -> Response:
        """One campaign (latest or earlier run) as in campaigns.json."""
        doc = service().campaign(campaign_id)
        if doc is None:
            raise HTTPException(404, "no such campaign in the latest linking run")
        return Response(dumps(doc), media_type="application/json")

    @app.get("/v1/accounts/{account_id}", tags=["analyst", "gateway"])
    def account(account_id: str) -> Response:
        """An account's current decision with reasons, linking result and counts."""
        doc = service().account(account_id)
        if doc is None:
            raise HTTPException(404, "account never seen")
        return Response(dumps(doc), media_type="application/json")

    @app.get("/v1/indicators", tags=["analyst"])
    def indicators() -> Response:
        """Payment fingerprints, IPs, CIDRs and ASNs of flagged campaigns."""
        return Response(dumps(service().indicators()), media_type="application/json")

    @app.get("/v1/search", tags=["analyst"])
    def search(kind: str = Query(..., description=" | ".join(SEARCH_KINDS)),
               q: str = Query(..., max_length=200)) -> Response:
        """Accounts seen with an IP, an ASN or a payment fingerprint."""
        if kind not in SEARCH_KINDS:
            raise HTTPException(422, f"kind must be one of {', '.join(SEARCH_KINDS)}")
        return Response(dumps(service().search(kind, q)), media_type="application/json")

    @app.get("/v1/status", tags=["ops"])
    def status() -> Response:
        """Window size, linking schedule bookkeeping and decision counts."""
        return Response(dumps(service().status()), media_type="application/json")

    dashboard.mount(app, service, token, s)
    return app
