"""``--log-format json``: one JSON object per log event, with stable field names."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher, globalLogPublisher
from twisted.python import log as legacy_log
from twisted.python import usage
from twisted.python.failure import Failure

from mbroker.server import logformat
from mbroker.server.tap import Options


def logged(emit: Any) -> list[dict[str, Any]]:
    """What the JSON observer writes for the events ``emit(logger)`` logs."""
    out = io.StringIO()
    publisher = LogPublisher(logformat.JSONLineObserver(out))
    emit(Logger(namespace="mbroker.test", observer=publisher))
    lines = out.getvalue().splitlines()
    return [json.loads(line) for line in lines]


def test_stable_fields_then_the_events_own() -> None:
    [record] = logged(
        lambda log: log.info("{peer} declared {queue}", peer="127.0.0.1:5000", queue="jobs")
    )
    assert list(record)[:4] == ["time", "level", "namespace", "message"]
    assert record["level"] == "info"
    assert record["namespace"] == "mbroker.test"
    assert record["message"] == "127.0.0.1:5000 declared jobs"
    assert record["peer"] == "127.0.0.1:5000" and record["queue"] == "jobs"
    assert record["time"].endswith("Z") and record["time"][10] == "T"
    assert not any(key.startswith("log_") for key in record)


def test_time_is_iso_8601_utc() -> None:
    event = {"log_time": 0.5, "log_level": LogLevel.warn, "log_format": "x"}
    record = logformat.record(event)
    assert record["time"] == "1970-01-01T00:00:00.500Z"
    assert record["level"] == "warn"


def test_odd_values_become_text_and_newlines_stay_in_one_line() -> None:
    [record] = logged(lambda log: log.error("a\nb {thing}", thing=object(), count=3, ok=None))
    assert record["message"].startswith("a\nb <object object")
    assert record["thing"].startswith("<object object") and record["count"] == 3
    assert record["ok"] is None


def test_a_failure_carries_its_traceback() -> None:
    def emit(log: Logger) -> None:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.failure("it broke", failure=Failure())

    [record] = logged(emit)
    assert record["level"] == "critical" and record["message"] == "it broke"
    assert "ZeroDivisionError" in record["traceback"]


def test_a_legacy_event() -> None:
    out = io.StringIO()
    observer = logformat.JSONLineObserver(out)
    globalLogPublisher.addObserver(observer)
    try:
        legacy_log.msg("hello", "world")
    finally:
        globalLogPublisher.removeObserver(observer)
    [record] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["message"] == "hello world" and record["level"] == "info"
    assert set(record) == {"time", "level", "namespace", "message"}


def test_log_format_option() -> None:
    assert Options()["log-format"] == "text"
    options = Options()
    options.parseOptions(["--log-format", "json"])
    assert options["log-format"] == "json"
    with pytest.raises(usage.UsageError, match="--log-format must be text or json, not 'xml'"):
        Options().parseOptions(["--log-format", "xml"])


@pytest.fixture(autouse=True)
def _reset_log_path() -> Any:
    yield
    logformat._log_path = None


def twistd_options(**values: Any) -> dict[str, Any]:
    return {"logger": None, "syslog": 0, "logfile": None, "nodaemon": 0, **values}


def test_json_goes_to_standard_output_with_nodaemon() -> None:
    parent = twistd_options(nodaemon=1)
    logformat.use_json(parent)
    assert parent["logger"] == logformat.JSON_LOGGER
    assert logformat._log_path is None


def test_json_goes_to_the_logfile_twistd_would_use(tmp_path: Path) -> None:
    parent = twistd_options(logfile=str(tmp_path / "broker.log"))
    logformat.use_json(parent)
    assert parent["logger"] == logformat.JSON_LOGGER
    observer = logformat.json_logger()
    observer({"log_time": 1.0, "log_level": LogLevel.info, "log_format": "one"})
    observer.out.close()
    [line] = (tmp_path / "broker.log").read_text().splitlines()
    assert json.loads(line)["message"] == "one"


def test_a_daemon_without_logfile_logs_to_twistd_log() -> None:
    logformat.use_json(twistd_options())
    assert logformat._log_path == "twistd.log"


@pytest.mark.parametrize("given", [{"logger": "my.observer"}, {"syslog": 1}])
def test_twistds_own_logger_or_syslog_is_left_alone(given: dict[str, Any]) -> None:
    parent = twistd_options(**given)
    logformat.use_json(parent)
    assert parent["logger"] == given.get("logger")


def test_the_option_tells_twistd() -> None:
    from twisted.scripts.twistd import ServerOptions

    server = ServerOptions()
    server.parseOptions(["--nodaemon", "mbroker", "--log-format=json", "--memory"])
    assert server["logger"] is logformat.json_logger  # twistd resolved the name
