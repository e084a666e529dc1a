"""The dashboard page at ``/``: static HTML, CSS and JavaScript modules, no build step.

The files live in ``mbroker/server/http/static/`` (package data) and are read once,
when the HTTP site is made: a request is answered from memory, never by touching the
disk on the reactor thread.  Only the files found there are served, by exact name
(``/static/app.js``): a name with a ``/``, ``..`` or anything else is simply not in
the table, so there is no path traversal and no directory listing to guard.

Every answer carries a strict Content-Security-Policy: scripts, styles, images and
``fetch`` from this origin only, no inline script or style, no frames, no forms
posting anywhere.  The page's JavaScript reads and changes the broker through the
JSON API (``/api/...``), with a JSON content type so the API's anti-CSRF guard lets
its changes through; data is put on the page with ``textContent``, never as HTML.
"""

from __future__ import annotations

from importlib import resources

import attrs

from mbroker import errors
from mbroker.server.http.api import Reply, error_reply

#: the Content-Security-Policy of every dashboard file
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: content types by file extension (any other file in the directory is not served)
CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
#: the page served at ``/``
INDEX = "index.html"
#: headers every dashboard answer carries, besides its content type
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", CSP.encode("ascii")),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
)


@attrs.frozen
class File:
    """One static file: its bytes and content type."""

    data: bytes
    content_type: bytes


def load(package: str = "mbroker.server.http", folder: str = "static") -> dict[str, File]:
    """The servable files of ``package``'s ``folder``, by name (subfolders ignored)."""
    files: dict[str, File] = {}
    for entry in resources.files(package).joinpath(folder).iterdir():
        name = entry.name
        dot = name.rfind(".")
        content_type = CONTENT_TYPES.get(name[dot:]) if dot > 0 else None
        if content_type is not None and entry.is_file():
            files[name] = File(entry.read_bytes(), content_type)
    return files


class Dashboard:
    """The dashboard's files, answered by path: ``[]`` or ``[""]`` is the page,
    ``["static", NAME]`` a file of it."""

    def __init__(self, files: dict[str, File] | None = None) -> None:
        self.files = load() if files is None else files

    @staticmethod
    def handles(path: list[str]) -> bool:
        """Whether ``path`` (the request's segments) is the dashboard's."""
        return not path or path == [""] or path[0] == "static"

    def answer(self, method: str, path: list[str]) -> Reply:
        """The answer to a ``method`` of ``path``: the file, ``405`` to anything but
        GET or HEAD; raises :class:`~mbroker.errors.NotFound` for a file that is not
        there."""
        if method not in ("GET", "HEAD"):
            refused = error_reply(errors.BadCommand(f"{method} is not allowed here"))
            return Reply(405, refused.body, ((b"Allow", b"GET, HEAD"),))
        if not path or path == [""]:
            name = INDEX
        elif len(path) == 2 and path[0] == "static":
            name = path[1]
        else:
            name = ""
        found = self.files.get(name)
        if found is None:
            raise errors.NotFound("no such file: /" + "/".join(path))
        return Reply(200, found.data, ((b"Content-Type", found.content_type), *HEADERS))
