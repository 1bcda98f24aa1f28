"""Templates, static assets and the security headers every dashboard response carries."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import Response
from starlette.types import Scope

from services.gateway.dashboard import charts

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
PREFIX = "/dashboard"

# No inline script anywhere (the script is a static file); SVG charts are styled by
# class, so styles need no 'unsafe-inline' either. Nothing is loaded from elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATIC_MAX_AGE = 86_400  # URLs carry the file's hash, so a change is a new URL


def secure(response: Response, *, cache: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if not cache:
        response.headers["Cache-Control"] = "no-store"  # pages show one project's data
    return response


class Static(StaticFiles):
    """The dashboard's own CSS and script, cacheable, with the security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = f"public, max-age={STATIC_MAX_AGE}"
        return secure(response, cache=True)


def _versioned() -> dict[str, str]:
    return {
        f.name: f"{PREFIX}/static/{f.name}?v={hashlib.sha256(f.read_bytes()).hexdigest()[:12]}"
        for f in STATIC_DIR.iterdir()
        if f.is_file()
    }


ASSETS = _versioned()

env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.globals.update(assets=ASSETS, prefix=PREFIX, charts=charts)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _when(value: Any) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


env.filters.update(percent=_percent, duration=_duration, when=_when)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered whole, or only its live block for the poller (``?fragment=1``)."""
    viewer = getattr(request.state, "viewer", None)
    html = env.get_template(template).render(
        request=request,
        fragment=request.query_params.get("fragment") == "1",
        viewer=viewer,
        csrf=viewer.csrf if viewer else "",
        **context,
    )
    return HTMLResponse(html, status_code=status_code)
