"""GET /transparency: the public page that shows revenue turning into burned $SERV.

The page is static HTML, CSS and JS; the JS reads the public JSON endpoints (/network,
/burns, /burns/summary, /burns/{id}/verify), so it shows exactly what anyone can fetch. Every
asset is served from here (uPlot from the pinned npm package in app/static), so the page works
offline and under a Content-Security-Policy that allows nothing but this origin.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from app.errors import NotFound
from app.openapi import STATIC as NPM_ASSETS
from app.web import Router

router = Router("transparency")
PAGE = Path(__file__).parent / "static"
# No inline script or style, no other origin: an injected tag in some displayed value could
# neither run nor load anything.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer"}
# name -> (file, Cache-Control). Our own files are revalidated (ETag) so a deploy shows at once;
# the pinned library changes only with its version.
ASSETS = {
    "transparency.js": (PAGE / "transparency.js", "no-cache"),
    "transparency.css": (PAGE / "transparency.css", "no-cache"),
    "uPlot.iife.min.js": (NPM_ASSETS / "node_modules/uplot/dist/uPlot.iife.min.js",
                          "public, max-age=86400"),
    "uPlot.min.css": (NPM_ASSETS / "node_modules/uplot/dist/uPlot.min.css",
                      "public, max-age=86400"),
}
HTML = {200: {"text/html": {"schema": {"type": "string"}}}}


@router.get("/transparency", responses={200: None}, content=HTML)
async def transparency(_: Request) -> Response:
    """Public: an HTML page for people. Revenue, buybacks and burned $SERV per our records and
    per the chain, a chart of burns over time, every burn with its transactions and a button that
    verifies it on chain, and the network now. It refreshes itself every 15 s."""
    return FileResponse(PAGE / "index.html", media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


async def _asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise NotFound(f"no transparency page asset named {name[:80]!r}")
    path, cache = ASSETS[name]
    if not path.is_file():
        raise NotFound("the page's npm assets are not installed: run `make install`",
                       code="assets_not_installed")
    return FileResponse(path, headers={**SECURITY_HEADERS, "Cache-Control": cache})


def asset_routes() -> list[BaseRoute]:
    return [Route("/transparency/assets/{name}", _asset, include_in_schema=False)]
