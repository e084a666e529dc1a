"""A durable write batch that fails on a real, really full file system, against
``twistd``: every command of the pipelined window gets its own status line, in order
(docs/protocol.rst: framing and error codes).

The broker runs in a mount namespace of its own (``unshare -m``) with a 1 MiB tmpfs
mounted on its data directory: a real small file system that fills up, made without
touching the machine's mounts.  Where that cannot be made (no root, no ``unshare``),
the broker runs with a file-size limit (``RLIMIT_FSIZE``) instead: the kernel then
refuses the write (``EFBIG``) as a full disk refuses it (``ENOSPC``), on a real file.
The fault-injection tests of ``tests/test_durable_faults.py`` cover the same rule at
the file layer.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from pathlib import Path

from tests.helpers.broker import _LISTENING, BrokerProcess, twistd_command
from tests.helpers.contract import connect

SIZE = 1024 * 1024
#: four of them and a PING come in one read: the broker decodes them as one run
PAYLOAD = 12 * 1024


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size=64k tmpfs "{probe}"'],
        capture_output=True,
    )
    return done.returncode == 0


def _start_on_a_small_fs(tmp_path: Path) -> tuple[BrokerProcess, str]:
    data = tmp_path / "data"
    data.mkdir()
    broker_args = [
        *twistd_command(),
        "--nodaemon",
        "--logfile=-",
        "--pidfile=",
        "mbroker",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--data-dir",
        str(data),
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if _can_mount_tmpfs(tmp_path):
        how = "tmpfs"
        command = [
            "unshare",
            "-m",
            "sh",
            "-c",
            f'mount -t tmpfs -o size={SIZE} tmpfs "{data}" && exec "$@"',
            "sh",
            *broker_args,
        ]
        preexec = None
    else:
        how = "RLIMIT_FSIZE"
        command = broker_args

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (SIZE, SIZE))

    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,
    )
    broker = BrokerProcess(process, data)
    try:
        match = broker.wait_for_line(_LISTENING, 30.0)
    except BaseException:
        broker.stop()
        raise
    broker.host = match.group(1).decode("ascii").strip("[]")
    broker.port = int(match.group(2))
    return broker, how


def test_a_failed_write_batch_on_a_full_disk_answers_every_command(tmp_path: Path) -> None:
    broker, how = _start_on_a_small_fs(tmp_path)
    try:
        with connect(broker, timeout=10.0) as c:
            assert c.ok("CREATE jobs queue durable") == "+OK created"
            assert c.ok("CREATE tmp queue") == "+OK created"
            payload = b"x" * PAYLOAD
            window = b"".join(b"PUBLISH jobs %d\r\n%s\r\n" % (PAYLOAD, payload) for _ in range(4))
            confirmed = 0
            for _ in range(2 * SIZE // (4 * PAYLOAD) + 2):
                c.send(window + b"PING\r\n")
                lines = [c.readline() for _ in range(5)]
                # one status line per command, in order, whatever happened to the batch
                assert lines[4] == b"+PONG", (how, lines)
                if lines[:4] == [b"+OK 1"] * 4:
                    confirmed += 4
                    continue
                # the batch that failed: each PUBLISH has its own refusal (one that was
                # stored in an earlier write of the window keeps its +OK)
                assert all(
                    line == b"+OK 1" or line.startswith(b"-ERR UNAVAILABLE ") for line in lines[:4]
                ), lines
                assert lines[3].startswith(b"-ERR UNAVAILABLE "), lines
                break
            else:
                raise AssertionError(f"the {how} file system never filled up")
            assert confirmed > 0
            # the connection is still in step, reads and transient traffic go on
            assert c.ok("PUBLISH tmp :transient") == "+OK 1"
            assert c.payloads("PULL tmp") == [b"transient"]
            assert c.ok("PING") == "+PONG"
            assert int(c.stats("jobs")["messages"]) >= confirmed
    finally:
        broker.stop()
