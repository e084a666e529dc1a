"""The dashboard's files: what ``/`` and ``/static/...`` answer, and with which headers.

Two tiers, as for the API: :class:`Dashboard` asked directly (which names it serves,
no traversal, no listing), and the real site of a real broker over loopback (content
types, the Content-Security-Policy, login).  The page itself runs in a browser in
``tests/e2e/test_dashboard.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted

from mbroker import errors
from mbroker.config import Config
from mbroker.server.http import dashboard
from mbroker.server.http.dashboard import CSP, Dashboard, File, load
from tests.helpers.auth import cheap_hash
from tests.helpers.http import Site, start_site

STATIC = Path(dashboard.__file__).with_name("static")


def test_the_files_are_the_static_folder_with_their_types() -> None:
    files = load()
    assert set(files) == {p.name for p in STATIC.iterdir()}
    assert files["index.html"].content_type == b"text/html; charset=utf-8"
    assert files["app.js"].content_type == b"text/javascript; charset=utf-8"
    assert files["style.css"].content_type == b"text/css; charset=utf-8"
    assert files["icon.svg"].content_type == b"image/svg+xml"
    assert files["app.js"].data == (STATIC / "app.js").read_bytes()


def test_only_the_known_names_are_served() -> None:
    board = Dashboard({"app.js": File(b"js", b"text/javascript")})
    assert board.answer("GET", ["static", "app.js"]).body == b"js"
    for path in (
        ["static"],  # no listing
        ["static", ""],
        ["static", ".."],
        ["static", "..", "site.py"],
        ["static", "../site.py"],  # (%2F decoded inside one segment)
        ["static", "app.js", ""],
        ["static", "sub", "app.js"],
        ["app.js"],
    ):
        with pytest.raises(errors.NotFound):
            board.answer("GET", path)


def test_the_page_is_at_the_root_and_nothing_else_is_allowed() -> None:
    board = Dashboard()
    for root in ([], [""]):
        reply = board.answer("GET", root)
        assert reply.status == 200 and reply.body == (STATIC / "index.html").read_bytes()
    assert board.answer("HEAD", ["static", "app.js"]).status == 200
    refused = board.answer("POST", [])
    assert refused.status == 405 and refused.body["error"] == "BAD_COMMAND"
    assert (b"Allow", b"GET, HEAD") in refused.headers
    assert Dashboard.handles([]) and Dashboard.handles([""]) and Dashboard.handles(["static"])
    assert not Dashboard.handles(["api", "queues"]) and not Dashboard.handles(["metrics"])


def test_the_page_has_no_inline_script_or_style_and_names_only_its_files() -> None:
    html = (STATIC / "index.html").read_text()
    # every <script> has a src and no body; no event handler or style attribute
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S):
        assert 'src="/static/' in attrs and body.strip() == ""
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html
    files = load()
    for ref in re.findall(r'(?:src|href)="/static/([^"]+)"', html):
        assert ref in files
    # the modules import one another by names the table has, and set no HTML
    for name in [n for n in files if n.endswith(".js")]:
        text = (STATIC / name).read_text()
        for ref in re.findall(r'from "\./([^"]+)"', text):
            assert ref in files, (name, ref)
        assert "innerHTML" not in text and "outerHTML" not in text
        assert "insertAdjacentHTML" not in text and "document.write" not in text
        assert "eval(" not in text and "new Function" not in text


# ------------------------------------------------------------ over HTTP


@pytest_twisted.async_yield_fixture
async def site() -> AsyncIterator[Site]:
    s = await start_site(Config())
    yield s
    await s.service.stopService()
    await s.pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_headers(site: Site) -> None:
    status, h, body = await site.request("GET", "/")
    assert status == 200 and body == (STATIC / "index.html").read_bytes()
    assert h.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    assert h.getRawHeaders("content-security-policy") == [CSP]
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
    assert "default-src 'none'" in CSP and "frame-ancestors 'none'" in CSP
    assert h.getRawHeaders("x-content-type-options") == ["nosniff"]
    assert h.getRawHeaders("x-frame-options") == ["DENY"]
    assert h.getRawHeaders("cache-control") == ["no-store"]
    assert h.getRawHeaders("access-control-allow-origin") is None
    for name, kind in (
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ):
        status, h, body = await site.request("GET", "/static/" + name)
        assert status == 200 and h.getRawHeaders("content-type") == [kind]
        assert body == (STATIC / name).read_bytes()
    status, h, body = await site.request("HEAD", "/static/app.js")
    assert status == 200 and body == b""


@pytest_twisted.ensureDeferred
async def test_unknown_files_listings_and_traversal_are_404(site: Site) -> None:
    for path in (
        "/static/nope.js",
        "/static/",
        "/static",
        "/static/../site.py",
        "/static/%2e%2e/site.py",
        "/static/..%2Fsite.py",
        "/static/%2e%2e%2f%2e%2e%2fsetup.py",
        "/static/app.js/",
        "/index.html",
        "/site.py",
    ):
        status, h, raw = await site.request("GET", path)
        assert status == 404, path
        assert json.loads(raw)["error"] == "NOT_FOUND"
        assert h.getRawHeaders("content-type") == ["application/json"]
    status, h, _ = await site.request("POST", "/", b"{}", {"Content-Type": "application/json"})
    assert status == 405 and h.getRawHeaders("allow") == ["GET, HEAD"]


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dash-auth") / "users"
    path.write_text(f"admin:{cheap_hash('root')}:*:*:*\n")
    return path


@pytest_twisted.ensureDeferred
async def test_with_users_the_page_asks_for_the_same_login(users_file: Path) -> None:
    site = await start_site(Config(users_file=str(users_file), auth_fail_delay=0.01))
    try:
        for path in ("/", "/static/app.js"):
            status, h, _ = await site.request("GET", path)
            assert status == 401 and h.getRawHeaders("www-authenticate") == [
                'Basic realm="mbroker"'
            ]
            status, _, _ = await site.request("GET", path, user=("admin", "wrong"))
            assert status == 401
            status, _, body = await site.request("GET", path, user=("admin", "root"))
            assert status == 200 and body
    finally:
        await site.service.stopService()
        await site.pool.closeCachedConnections()
