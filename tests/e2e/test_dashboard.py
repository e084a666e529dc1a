"""The dashboard page in a real headless browser: Debian's chromium, driven by selenium.

One broker (``twistd -n mbroker --http``) and one browser serve the whole module; the
page polls every 500 ms (``/?poll=500``) so that the test waits little.  Queues and
messages are made over the native protocol, as a client would; what the page shows
and does is read from its DOM and checked over the wire.  The browser's console is
read after each test: an error there (a script error, a refused request, a CSP
violation) fails it.  A screenshot of the overview is written to the module's tmp
dir (``docs/dashboard.png`` is one of those).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from tests.helpers.broker import BrokerProcess, start_broker

CHROMEDRIVER = "/usr/bin/chromedriver"
#: flags without which chromium, on a closed network, hangs on look-ups
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)
WAIT = 20.0
T = TypeVar("T")

if shutil.which("chromium") is None or not Path(CHROMEDRIVER).exists():
    raise RuntimeError(
        "the dashboard's test needs Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver; .ci/run installs them)"
    )


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = start_broker(
        tmp_path_factory.mktemp("dash-broker"),
        "--http",
        "tcp:0:interface=127.0.0.1",
        memory_only=True,
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--user-data-dir=" + str(tmp_path_factory.mktemp("chromium-profile")))
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, broker: BrokerProcess) -> Iterator[WebDriver]:
    """The browser on the dashboard; after the test, its console must hold no error."""
    url = f"http://127.0.0.1:{broker.http_port}/?poll=500"
    if not browser.current_url.startswith(url):
        browser.get(url + "#/")
    yield browser
    assert console_errors(browser) == []


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """The console's errors since the last call (reading the log drains it)."""
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def wait_for(what: str, check: Callable[[], T | None], timeout: float = WAIT) -> T:
    """Poll ``check`` until it returns something true, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:  # (an element replaced under us: look again)
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def go(driver: WebDriver, hash_: str) -> None:
    driver.execute_script("location.hash = arguments[0]", hash_)


def api(broker: BrokerProcess, path: str) -> Any:
    with urllib.request.urlopen(
        f"http://127.0.0.1:{broker.http_port}/api/{path}", timeout=10
    ) as response:
        return json.loads(response.read())


def publish(broker: BrokerProcess, queue: str, payloads: list[bytes]) -> None:
    with broker.connect() as c:
        for p in payloads:
            assert c.request(b"PUBLISH %s %d\r\n%s" % (queue.encode(), len(p), p))[1].startswith(
                b"+OK"
            )


def create(broker: BrokerProcess, *names: str) -> None:
    with broker.connect() as c:
        for name in names:
            c.send_line(f"CREATE {name} queue")
        for _ in names:
            assert c.readline().startswith(b"+OK")


def row_of(driver: WebDriver, table: str, name: str) -> WebElement | None:
    """The row of ``table`` whose first cell says ``name``."""
    for row in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr"):
        cells = row.find_elements(By.TAG_NAME, "td")
        if cells and cells[0].text == name:
            return row
    return None


def cell(driver: WebDriver, table: str, name: str, n: int) -> str | None:
    """The text of cell ``n`` of ``name``'s row (None: no such row)."""
    row = row_of(driver, table, name)
    return None if row is None else str(row.find_elements(By.TAG_NAME, "td")[n].text)


def press(driver: WebDriver, table: str, name: str, label: str) -> None:
    """Click the ``label`` button of ``name``'s row (the table is redrawn as it polls:
    look again until a click lands)."""

    def click() -> bool:
        row = row_of(driver, table, name)
        if row is None:
            return False
        row.find_element(By.XPATH, f".//button[text()='{label}']").click()
        return True

    wait_for(f"{label} of {name}", click)


def confirm(driver: WebDriver, expect: str) -> None:
    """Press OK in the page's confirmation dialog, which must name ``expect``."""
    dialog = wait_for("the dialog", lambda: driver.find_element(By.ID, "confirm"))
    wait_for("the dialog to open", lambda: dialog.get_attribute("open") is not None)
    assert expect in driver.find_element(By.ID, "confirm-text").text
    driver.find_element(By.ID, "confirm-ok").click()
    wait_for("the dialog to close", lambda: dialog.get_attribute("open") is None)


def series_pixels(driver: WebDriver, canvas: str, rgb: tuple[int, int, int]) -> int:
    """How many pixels of ``canvas`` are (nearly) the colour ``rgb``."""
    return int(
        driver.execute_script(
            """
            const [id, r, g, b] = arguments;
            const c = document.getElementById(id);
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (d[i + 3] > 200 && Math.abs(d[i] - r) + Math.abs(d[i + 1] - g)
                  + Math.abs(d[i + 2] - b) < 40) n++;
            }
            return n;
            """,
            canvas,
            *rgb,
        )
    )


# ------------------------------------------------------------------- tests


def test_the_page_loads_and_its_charts_draw(
    page: WebDriver, broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert page.title == "mbroker"
    create(broker, "chart", "chart-2")
    wait_for("the totals", lambda: "Queues" in page.find_element(By.ID, "totals").text)
    points = page.find_element(By.ID, "chart-rates")

    def drawn() -> int:
        return int(points.get_attribute("data-points") or 0)

    # a few rounds of traffic, a poll apart: published, then some of it taken
    with broker.connect() as c:
        for n in range(1, 5):
            at = drawn()
            publish(broker, "chart", [b"x"] * 10 * n)
            publish(broker, "chart-2", [b"y"] * 5)
            assert c.request(b"PULL chart max=%d ack=auto" % (4 * n))[1] == b"+OK %d" % (4 * n)
            wait_for("another point", lambda: drawn() > at)  # noqa: B023
    for canvas in ("chart-rates", "chart-depths"):
        element = page.find_element(By.ID, canvas)
        assert int(element.get_attribute("data-points") or 0) >= 2
    # the "published" line (blue) of the rates and the "ready" line of the depths
    assert wait_for("a rates line", lambda: series_pixels(page, "chart-rates", (43, 123, 185)) > 50)
    assert wait_for(
        "a depth line", lambda: series_pixels(page, "chart-depths", (43, 123, 185)) > 50
    )
    legend = page.find_element(By.ID, "legend-depths").text
    assert "ready" in legend
    assert "chart-2" in page.find_element(By.ID, "deepest").text
    shot = tmp_path_factory.mktemp("screenshots") / "dashboard.png"
    assert page.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_a_queue_made_over_the_wire_appears_and_purge_empties_it(
    page: WebDriver, broker: BrokerProcess
) -> None:
    create(broker, "purge-me")
    publish(broker, "purge-me", [b"one", b"two", b"three"])
    go(page, "#/queues")
    page.find_element(By.CSS_SELECTOR, "#queues-table input[type=search]").send_keys("purge-me")
    wait_for("3 ready", lambda: cell(page, "queues-table", "purge-me", 1) == "3")
    press(page, "queues-table", "purge-me", "Purge")
    confirm(page, "purge-me")
    wait_for("0 ready", lambda: cell(page, "queues-table", "purge-me", 1) == "0")
    assert api(broker, "queues/purge-me")["messages_ready"] == 0
    assert "Purged 3" in page.find_element(By.ID, "status").text


def test_cancel_keeps_the_queue_and_delete_deletes_it(
    page: WebDriver, broker: BrokerProcess
) -> None:
    create(broker, "delete-me")
    publish(broker, "delete-me", [b"kept"])
    go(page, "#/queues")
    search = page.find_element(By.CSS_SELECTOR, "#queues-table input[type=search]")
    search.clear()
    search.send_keys("delete-me")
    press(page, "queues-table", "delete-me", "Delete")
    dialog = page.find_element(By.ID, "confirm")
    wait_for("the dialog to open", lambda: dialog.get_attribute("open") is not None)
    page.find_element(By.ID, "confirm-cancel").click()
    assert api(broker, "queues/delete-me")["messages_ready"] == 1
    press(page, "queues-table", "delete-me", "Delete")
    confirm(page, "delete-me")
    wait_for("the row to go", lambda: row_of(page, "queues-table", "delete-me") is None)
    assert "delete-me" not in [q["name"] for q in api(broker, "queues")]


def test_create_a_queue_from_the_page(page: WebDriver, broker: BrokerProcess) -> None:
    go(page, "#/queues")
    page.find_element(By.ID, "new-queue-name").send_keys("made-here")
    page.find_element(By.ID, "new-queue-durable").click()
    page.find_element(By.ID, "new-queue-create").click()
    wait_for("the queue", lambda: "made-here" in [q["name"] for q in api(broker, "queues")])
    assert api(broker, "queues/made-here")["durable"] is True


def test_a_payload_is_shown_as_text_on_the_queue_page(
    page: WebDriver, broker: BrokerProcess
) -> None:
    evil = "<img src=x onerror=alert(1)>"
    create(broker, "xss")
    with broker.connect() as c:  # headers: escaped, shown as text
        line = b"PUBLISH xss id=m-1 priority=3 h.note=%3Cb%3Ea%0Ab%3C/b%3E h.raw=%FF :p"
        assert c.request(line)[1].startswith(b"+OK")
    publish(broker, "xss", [evil.encode(), b"\xff\x00binary"])
    with broker.connect() as c:  # a binding, for the page to show
        assert c.request(b"CREATE tags direct")[1].startswith(b"+OK")
        assert c.request(b"BIND xss tags orders.new")[1].startswith(b"+OK")
        go(page, "#/queue/xss")
        shown = wait_for(
            "the payloads",
            lambda: page.find_elements(By.CSS_SELECTOR, "#queue-messages pre.payload"),
        )
        assert shown[1].text == evil
        assert shown[2].get_attribute("title") == "base64 (not UTF-8)"
        props = page.find_elements(By.CSS_SELECTOR, "#queue-messages pre.properties")
        assert [p.text for p in props] == [
            "id: m-1\npriority: 3\nnote: <b>a\\nb</b>\nraw (base64): /w==",
            "",
            "",
        ]
        assert page.find_elements(By.CSS_SELECTOR, "main img") == []
        with pytest.raises(NoAlertPresentException):
            page.switch_to.alert.text  # noqa: B018
        bindings = wait_for("the binding", lambda: page.find_element(By.ID, "queue-bindings").text)
        assert "tags" in bindings and "orders.new" in bindings
        assert page.find_element(By.ID, "queue-name").text == "xss"
        # the queue's own purge button, on its page
        page.find_element(By.ID, "queue-purge").click()
        confirm(page, "xss")
        wait_for(
            "no message",
            lambda: "no ready messages" in page.find_element(By.ID, "queue-messages").text,
        )
        # a consumer, on the queue's page
        assert c.request(b"SUBSCRIBE xss prefetch=7 ack=manual")[1].startswith(b"+OK")
        consumers = page.find_element(By.ID, "queue-consumers")
        wait_for("the consumer", lambda: "manual" in consumers.text and "7" in consumers.text)
        # the exchange, in the exchanges' table
        go(page, "#/exchanges")
        wait_for("the exchange", lambda: cell(page, "exchanges-table", "tags", 1) == "direct")
        assert cell(page, "exchanges-table", "tags", 3) == "1"  # its binding
    go(page, "#/")


def test_ten_thousand_queues_page_on_the_server(page: WebDriver, broker: BrokerProcess) -> None:
    names = [f"many-{i:05d}" for i in range(10_000)]
    with broker.connect(timeout=60) as c:
        c.send(b"".join(f"CREATE {n} queue\r\n".encode() for n in names))
        for _ in names:
            assert c.readline(timeout=60).startswith(b"+OK")
    go(page, "#/queues")
    search = page.find_element(By.CSS_SELECTOR, "#queues-table input[type=search]")
    search.clear()
    search.send_keys("many-")
    info = page.find_element(By.CSS_SELECTOR, "#queues-table .pager span")
    wait_for("10,000 queues", lambda: info.text.startswith("page 1 of 200 (10000 of"))
    rows = page.find_elements(By.CSS_SELECTOR, "#queues-table tbody tr")
    assert len(rows) == 50
    search.send_keys("0999")
    wait_for("the filter", lambda: "(10 of" in info.text)
    assert len(page.find_elements(By.CSS_SELECTOR, "#queues-table tbody tr")) == 10
    # sort by name, descending: the last one first
    header = page.find_element(By.CSS_SELECTOR, "#queues-table th[data-key=name]")

    def first() -> str:
        return str(page.find_elements(By.CSS_SELECTOR, "#queues-table tbody tr td")[0].text)

    assert first() == "many-09990"
    header.click()
    wait_for("descending", lambda: first() == "many-09999")
    assert "sorted-down" in (header.get_attribute("class") or "")
    search.send_keys(Keys.BACKSPACE * 4)
    wait_for("no filter", lambda: info.text.startswith("page 1 of 200 (10000 of"))
    page.find_element(By.XPATH, "//div[@id='queues-table']//button[contains(., 'next')]").click()
    wait_for("page 2", lambda: info.text.startswith("page 2 of 200"))


def test_close_a_connection_from_the_page(page: WebDriver, broker: BrokerProcess) -> None:
    with broker.connect() as c:
        go(page, "#/connections")

        def texts() -> tuple[list[str], list[str]] | None:
            # (read in one go: the page redraws the table every refresh, and an element
            # found before a redraw is stale after it; wait_for looks again then)
            cells = [
                td.text
                for td in page.find_elements(By.CSS_SELECTOR, "#connections-table tbody tr td.num")
            ]
            headers = [
                th.text for th in page.find_elements(By.CSS_SELECTOR, "#connections-table thead th")
            ]
            return (headers, cells) if cells and headers else None

        headers, cells = wait_for("the connection", texts)
        # the bytes it sent and was sent (at least its HELLO), in their columns
        at = headers.index("Bytes out")
        assert headers[at - 1] == "Bytes in" and cells[-2].endswith(" B"), (headers, cells)
        assert cells[-1].endswith(" B") and cells[-1] != "0 B", cells  # (HELLO at least)

        def close() -> bool:
            page.find_element(
                By.XPATH, "//div[@id='connections-table']//button[text()='Close']"
            ).click()
            return True

        wait_for("the Close button", close)
        confirm(page, "Close connection")
        assert c.readline() == b"-ERR LIMIT closed by an operator"
        assert c.expect_closed()
    go(page, "#/")
