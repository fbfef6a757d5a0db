"""Serves the web page (``/``) and its assets (``/static/...``) on the HTTP port.

The page is plain files shipped in the package (``services/web/static``): ES modules,
AudioWorklet processors and a stylesheet, no build step and nothing fetched from elsewhere,
so it works offline. It talks to the server's own websocket endpoints (Kyutai's protocols,
``services.http``): ``/api/chat?format=pcm`` for Talk, ``/api/asr-streaming`` for Transcribe,
``/api/tts_streaming`` and ``/api/voices`` for Speak, ``/api/health`` and ``/api/info`` for
its states.

Content types are set here rather than guessed from the system's mime table: a machine
without ``/etc/mime.types`` would send CSS as ``application/octet-stream``, which a browser
refuses to apply, and module scripts (worklets too) need a JavaScript type.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                 ".svg": "image/svg+xml", ".png": "image/png"}
# Everything the page loads comes from this server; the websockets are same-origin too.
# (blob: for the download of synthesized speech, a blob URL the page makes.)
CONTENT_SECURITY_POLICY = ("default-src 'self'; connect-src 'self' blob:; "
                           "img-src 'self' data: blob:; media-src 'self' blob:; "
                           "object-src 'none'; base-uri 'none'")


def static_files() -> dict[str, Path]:
    """The page's files by URL path under ``/static/`` ("js/talk.js": its file)."""
    return {p.relative_to(STATIC).as_posix(): p for p in sorted(STATIC.rglob("*"))
            if p.is_file() and p.suffix in CONTENT_TYPES}


class WebPage:
    """``GET /``: the page; ``GET /static/{path}``: one of its files (only those shipped)."""

    def __init__(self) -> None:
        # Read once: the files are package data and do not change while serving.
        self._files = {name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
                       for name, path in static_files().items()}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name:.+}", self._static)

    async def _index(self, request: web.Request) -> web.Response:
        return self._respond("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._files:
            raise web.HTTPNotFound(text=f"no file {name!r} in the page")
        return self._respond(name)

    def _respond(self, name: str) -> web.Response:
        body, content_type = self._files[name]
        # no-cache: a browser revalidates, so a restarted server with a newer page is seen.
        return web.Response(body=body, content_type=content_type, charset="utf-8"
                            if content_type.startswith("text/") else None,
                            headers={"Cache-Control": "no-cache",
                                     "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                                     "X-Content-Type-Options": "nosniff"})
