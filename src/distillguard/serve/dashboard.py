"""Server-rendered dashboard: campaigns, campaign detail with the report's charts, account
lookup and indicator search. No scripts and no external resources (the CSP forbids both).

The campaign page draws the same charts as `distillguard report` by calling the report's
own `campaign_sections` on the run directory the latest linking run wrote.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import jinja2
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from distillguard.errors import InputError
from distillguard.outputs.report import _releases, campaign_sections
from distillguard.outputs.rundir import open_run
from distillguard.outputs.templating import num, when
from distillguard.outputs.view import make_view
from distillguard.serve.auth import token_matches
from distillguard.serve.decisions import ACTIONS
from distillguard.serve.service import SEARCH_KINDS, Service

CHART_CACHE = 16  # campaign pages kept rendered (charts take a second or two each)
MAX_FORM_BYTES = 4096
EARLIER_LISTED = 50  # campaigns of earlier linking runs listed under the current ones

_env = jinja2.Environment(loader=jinja2.PackageLoader("distillguard.serve", "templates"),
                          autoescape=True, trim_blocks=True, lstrip_blocks=True)
_env.filters.update(when=when, num=num)


def _page(name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
    html = _env.get_template(name).render(nav=name != "login.html.j2", kinds=SEARCH_KINDS,
                                          actions=ACTIONS, **ctx)
    return HTMLResponse(html, status_code=code)


class _Sections:
    """Campaign chart sections, computed once per linking run and campaign."""

    def __init__(self, report_cfg: dict[str, Any]) -> None:
        self.report_cfg = report_cfg
        self._cache: OrderedDict[tuple[float, str], dict[str, Any] | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, service: Service, campaign_id: str) -> dict[str, Any] | None:
        path = service.state.run_dir
        if not (path / "campaigns.json").exists():
            return None
        key = ((path / "campaigns.json").stat().st_mtime, campaign_id)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            try:
                rd = open_run(path)
            except InputError:
                return None
            try:
                view = make_view(rd, None, self.report_cfg)
                mine = [c for c in view.campaigns if c["campaign_id"] == campaign_id]
                section = (campaign_sections(dataclasses.replace(view, campaigns=mine),
                                             _releases(rd))[0] if mine else None)
            finally:
                rd.db.close()
            self._cache[key] = section
            while len(self._cache) > CHART_CACHE:
                self._cache.popitem(last=False)
            return section


def mount(app: FastAPI, service: Callable[[], Service], token: str, s: dict[str, Any]) -> None:
    """Add the login form and the dashboard pages to APP."""
    sections = _Sections(app.state.cfg["report"])

    @app.get("/login", include_in_schema=False)
    def login_form() -> HTMLResponse:
        return _page("login.html.j2", title="Sign in")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _page("login.html.j2", 413, title="Sign in", error="Form too large.")
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if not token_matches(token, given):
            return _page("login.html.j2", 401, title="Sign in", error="Wrong token.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(s["cookie_name"], given, max_age=int(s["cookie_max_age"]),
                            httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(s["cookie_name"])
        return response

    @app.get("/", include_in_schema=False)
    def campaigns_page() -> HTMLResponse:
        svc = service()
        return _page("campaigns.html.j2", title="Campaigns", campaigns=svc.campaigns(),
                     earlier=svc.campaigns(current=False)[:EARLIER_LISTED],
                     status=svc.status(), cfg=s)

    @app.get("/campaigns/{campaign_id}", include_in_schema=False)
    async def campaign_page(campaign_id: str) -> HTMLResponse:
        svc = service()
        doc = svc.campaign(campaign_id)
        if doc is None:
            return _page("account.html.j2", 404, title="Not found", a=None,
                         account_id=campaign_id)
        section = await run_in_threadpool(sections.get, svc, campaign_id)
        charts = section is not None
        if section is None:
            section = {"c": doc, "signals": doc.get("signals", []), "accounts": []}
        return _page("campaign.html.j2", title=campaign_id, section=section, charts=charts)

    @app.get("/accounts", include_in_schema=False)
    def account_page(id: str = "") -> HTMLResponse:
        a = service().account(id) if id else None
        return _page("account.html.j2", 200 if a else 404, title=f"Account {id}", a=a,
                     account_id=id)

    @app.get("/search", include_in_schema=False)
    def search_page(kind: str = "ip", q: str = "") -> HTMLResponse:
        if kind not in SEARCH_KINDS:
            return _page("search.html.j2", 422, title="Search", kind=kind, q=q, rows=[],
                         limit=200, error=f"kind must be one of {', '.join(SEARCH_KINDS)}")
        rows = service().search(kind, q[:200]) if q else []
        return _page("search.html.j2", title="Search", kind=kind, q=q, rows=rows, limit=200)
