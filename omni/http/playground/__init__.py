"""The playground: a page at GET / (and /playground) that makes images and videos with the served
model through the public API, from static files in `static/` (no build step, nothing fetched from
elsewhere, so it works offline)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
PAGE_PATHS = ("/", "/playground")
STATIC_PREFIX = "/playground/static/"  # the page's scripts and styles
# The page is the same for every server: the browser checks it is current on each load.
PAGE_HEADERS = {"Cache-Control": "no-cache"}


def add_playground_routes(app: web.Application) -> None:
    for path in PAGE_PATHS:
        app.router.add_get(path, get_page)
    app.router.add_static(STATIC_PREFIX.rstrip("/"), STATIC_DIR)


async def get_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


def is_page_path(path: str) -> bool:
    """The page and its files: served without the API key, as they hold nothing but code."""
    return path in PAGE_PATHS or path.startswith(STATIC_PREFIX)
