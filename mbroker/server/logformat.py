"""JSON logs: one JSON object per line with stable field names, for log shippers.

Every record has ``time`` (ISO 8601, UTC), ``level`` (``debug``, ``info``, ``warn``,
``error``, ``critical``), ``namespace`` (the logger's, such as
``mbroker.server.service``) and ``message`` (the text the text format shows), then the
event's own fields (``address``, ``endpoint``, ``peer``, ``user``, ...) and, for an
error with a traceback, ``traceback``.

Two ways to get them under twistd:

* ``twistd -n mbroker --log-format json`` (or ``log-format = "json"`` in the config
  file): the broker's options hand :func:`json_logger` to twistd, writing where the
  text log would go (standard output with ``-n``, else ``--logfile``);
* ``twistd -n --logger mbroker.server.logformat.json_logger mbroker``: twistd's own
  option, which takes a factory of log observers; standard output then.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, formatEvent
from twisted.python import usage
from twisted.python.logfile import LogFile
from zope.interface import implementer

from mbroker.config import Documented

#: What ``--log-format`` accepts.
FORMATS = ("text", "json")

#: twistd's ``--logger`` value that makes JSON logs.
JSON_LOGGER = "mbroker.server.logformat.json_logger"

#: Keys of an event that are not fields of its own: Twisted's bookkeeping and the keys
#: of the legacy ``twisted.python.log`` format.
_HIDDEN = frozenset({"message", "format", "isError", "system", "time", "why", "failure"})
_STABLE = ("time", "level", "namespace", "message")

#: Where :func:`json_logger` writes: ``None`` for standard output, else a file path
#: (set by :func:`use_json` from twistd's ``--logfile``).
_log_path: str | None = None


def _check_log_format(value: str) -> str:
    """The coerce function of ``--log-format``."""
    if value not in FORMATS:
        raise usage.UsageError(f"--log-format must be text or json, not {value!r}")
    return value


log_format = Documented(_check_log_format, "text or json.")


def record(event: LogEvent) -> dict[str, Any]:
    """The JSON record of a log event, stable fields first."""
    level = event.get("log_level")
    out: dict[str, Any] = {
        "time": _iso(event.get("log_time")),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace") or event.get("log_system") or "-",
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _HIDDEN or key in out:
            continue
        if value is None or isinstance(value, (str, int, float, bool)):
            out[key] = value
        else:
            out[key] = str(value)
    failure = event.get("log_failure")
    if failure is not None:
        out["traceback"] = failure.getTraceback()
    return out


def _iso(timestamp: float | None) -> str:
    when = datetime.fromtimestamp(timestamp or 0.0, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@implementer(ILogObserver)
class JSONLineObserver:
    """Writes each event as one line of JSON to ``out``, and flushes."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: LogEvent) -> None:
        line = json.dumps(record(event), ensure_ascii=False, default=str)
        self.out.write(line + "\n")
        self.out.flush()


def json_logger() -> JSONLineObserver:
    """A factory of JSON log observers, for twistd's ``--logger``."""
    if _log_path is None:
        return JSONLineObserver(sys.stdout)  # (the real one: twistd redirects it later)
    return JSONLineObserver(LogFile.fromFullPath(_log_path))


def use_json(twistd_options: Any) -> None:
    """Make twistd log JSON (``--log-format json``), where its text log would go.

    ``twistd_options`` is twistd's own options (the parent of the broker's); a
    ``--logger`` or ``--syslog`` given there is left as it is."""
    global _log_path
    if twistd_options is None or twistd_options.get("logger") or twistd_options.get("syslog"):
        return
    logfile = twistd_options.get("logfile")
    if logfile == "-" or (not logfile and twistd_options.get("nodaemon")):
        _log_path = None
    else:
        _log_path = logfile or "twistd.log"
    twistd_options["logger"] = JSON_LOGGER
