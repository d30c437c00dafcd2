"""GET /transparency and its assets: served locally, under a strict Content-Security-Policy that
the page obeys (no inline script or style, nothing from another origin), and linked from /docs."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from app.transparency.routes import ASSETS, CSP, PAGE


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []  # text inside <script> or <style>
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        self._in = None

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        if self._in and data.strip():
            self.inline.append(data)


async def test_the_page_is_served_under_a_strict_csp_with_local_assets(api):  # type: ignore[no-untyped-def]
    r = await api.client.get("/transparency")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == CSP
    assert "default-src 'none'" in CSP and "'unsafe-inline'" not in CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    page = Tags()
    page.feed(r.text)
    assert page.inline == [], "inline script or style would be refused by the CSP"
    assert not any("style" in attrs or any(a.startswith("on") for a in attrs)
                   for _, attrs in page.tags), "inline style or event handler attributes"
    urls = [attrs.get("src") or attrs.get("href") for tag, attrs in page.tags
            if tag in ("script", "link")]
    assets = [u for u in urls if u and u.startswith("/transparency/assets/")]
    assert {u.rsplit("/", 1)[1] for u in assets} == set(ASSETS)
    assert all(u == "data:," or u.startswith("/") for u in urls if u), urls  # no other origin
    types = {"js": "text/javascript", "css": "text/css"}
    for url in assets:
        a = await api.client.get(url)
        assert a.status_code == 200, (url, a.text)
        assert a.headers["content-type"].startswith(types[url.rsplit(".", 1)[1]]), url
        assert a.headers["x-content-type-options"] == "nosniff"
    assert (await api.client.head("/transparency")).status_code == 200


async def test_an_unknown_asset_is_a_json_404(api):  # type: ignore[no-untyped-def]
    for name in ("index.html", "..%2Froutes.py", "uPlot.esm.js"):
        r = await api.client.get(f"/transparency/assets/{name}")
        assert r.status_code == 404 and r.json()["error"] == "not_found", name


def test_the_script_builds_the_page_without_html_strings() -> None:
    """Values from the API are shown with textContent only: no markup is ever parsed from them."""
    js = (PAGE / "transparency.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", js)


async def test_docs_and_openapi_link_the_page(api):  # type: ignore[no-untyped-def]
    doc = (await api.client.get("/openapi.json")).json()
    assert "](/transparency)" in doc["info"]["description"]  # shown atop /docs and /redoc
    assert "text/html" in doc["paths"]["/transparency"]["get"]["responses"]["200"]["content"]
