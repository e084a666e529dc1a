"""STOMP over WebSocket from a real browser: the real stomp.js (``@stomp/stompjs``, vendored
in ``tests/e2e/stompjs/``) in Debian's headless chromium, against
``twistd -n mbroker --stomp-ws``, with a native client on the other side.

The page (``tests/e2e/stompjs/index.html``) is served by a twisted.web static site that
this test runs on loopback; selenium's blocking calls run in threads so that the
reactor serves it meanwhile.  The page keeps what it saw in ``window.state``.  The
browser's console must hold no error at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from selenium.webdriver.chrome.webdriver import WebDriver
from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.chromium import start_chromium

PAGE_DIR = Path(__file__).with_name("stompjs")
WAIT = 20.0
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class Files(Resource):
    """The page and stomp.js, by name (twisted.web.static warns on import, so: this)."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        name = b"/".join(request.postpath or []).decode("utf-8", "replace")
        path = PAGE_DIR / name
        if "/" in name or path.suffix not in TYPES or not path.is_file():
            request.setResponseCode(404)
            return b"not found"
        request.setHeader("content-type", TYPES[path.suffix])
        return path.read_bytes()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = start_broker(
        tmp_path_factory.mktemp("stomp-ws-browser"),
        "--stomp-ws",
        "tcp:0:interface=127.0.0.1",
        memory_only=True,
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    driver = start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


async def poll(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Run ``check`` in a thread until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await deferToThread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_stomp_js_in_chromium_talks_to_native_clients(
    broker: BrokerProcess, browser: WebDriver
) -> None:
    site = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(Files()))
    try:
        with broker.connect() as native:
            native.request("CREATE back queue")
            _, status = native.request("SUBSCRIBE back")
            assert status.startswith(b"+OK"), status
            sid = int(status.split()[1])
            url = f"http://127.0.0.1:{site.getHost().port}/index.html?port={broker.stomp_ws_port}"
            await deferToThread(browser.get, url)

            def state() -> dict[str, Any]:
                return browser.execute_script("return window.state")  # type: ignore[no-any-return]

            await poll("stomp.js to connect and subscribe", lambda: state()["subscribed"])
            assert state()["version"] == "1.2"
            _, status = native.request("PUBLISH x :hello from native")
            assert status.startswith(b"+OK"), status
            received = await poll("the message in the page", lambda: state()["received"])
            assert received == ["hello from native"]
            message = await deferToThread(native.read_msg, WAIT)
            assert (message.sid, message.payload) == (sid, b"reply to hello from native")
            assert state()["errors"] == []
        console = await deferToThread(browser.get_log, "browser")
        assert [e for e in console if e["level"] in ("SEVERE", "ERROR")] == []
    finally:
        await site.stopListening()
