"""The broker core is collaborating objects with one job each, not one class split by
inheritance: the broker's commands are the collaborators' own methods (no call layer in
between), they ask each other only through public methods, and the names say which
side a message is on."""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.internet.task import Clock

import mbroker.client
from mbroker.core import model
from mbroker.core.broker import Broker
from mbroker.core.consuming import Consumption
from mbroker.core.namespace import Namespace
from mbroker.core.publishing import Publisher
from mbroker.core.reports import Reports
from mbroker.wire.frames import QueueOptions

CORE = Path(model.__file__).resolve().parent

#: the broker's commands, and the collaborator class whose method each one is
COMMANDS = {
    Namespace: ["get", "queue", "exchange", "create", "delete", "bind", "unbind", "purge"],
    Publisher: ["publish", "publish_many"],
    Consumption: ["subscribe", "activate", "unsubscribe", "pull", "ack", "nack", "touch"],
    Reports: ["list_objects", "stats"],
}


def test_the_broker_is_no_subclass_of_the_machinery() -> None:
    assert Broker.__mro__ == (Broker, object)


def test_each_command_is_the_collaborators_method_itself() -> None:
    b = Broker(Clock())
    for cls, names in COMMANDS.items():
        for name in names:
            method = getattr(b, name)
            assert method.__func__ is getattr(cls, name), name
            assert isinstance(method.__self__, cls), name


def test_the_counters_are_read_from_where_they_move() -> None:
    """PUBLISH, an auto-ack delivery, a PULL and a manual ACK each count once."""
    b = Broker(Clock())
    b.create(None, "q", "queue", QueueOptions())
    s = b.open_session(_Target())
    c = b.subscribe(s, "q")
    b.activate(c)
    b.publish("q", "", b"one")
    b.unsubscribe(s, c.sid)
    b.publish("q", "", b"two")
    pulled = b.pull(s, "q", manual=True)
    assert pulled is not None and len(pulled) == 1
    assert (b.published, b.delivered, b.acked) == (2, 2, 1)
    b.ack(s, ((pulled[0][0], pulled[0][0]),))
    stats = dict(b.stats())
    assert (stats["published"], stats["delivered"], stats["acked"]) == ("2", "2", "2")
    q = dict(b.stats("q"))
    assert (q["delivered"], q["acked"]) == ("2", "2")


def test_every_delivery_path_moves_the_same_counters() -> None:
    """Round-robin to two consumers, a run passed straight through, a manual
    subscription and a PULL: each delivery counts once for the server, its queue and its
    consumer; only the automatic ones count as acked at once."""
    b = Broker(Clock())
    s = b.open_session(_Target())
    for name in ("rr", "run", "manual", "pulled"):
        b.create(None, name, "queue", QueueOptions())
    consumers = [b.subscribe(s, "rr"), b.subscribe(s, "rr"), b.subscribe(s, "run")]
    manual = b.subscribe(s, "manual", manual=True)
    for c in [*consumers, manual]:
        b.activate(c)
    for _ in range(4):
        b.publish("rr", "", b"m")
    b.publish_many("run", "", [b"m"] * 3)
    b.publish("manual", "", b"m")
    b.publish("pulled", "", b"m")
    assert b.pull(s, "pulled", max=5)
    assert [c.delivered for c in consumers] == [2, 2, 3]
    assert manual.delivered == 1
    assert (b.delivered, b.acked) == (9, 8)
    figures = {n: dict(b.stats(n)) for n in ("rr", "run", "manual", "pulled")}
    assert {n: (f["delivered"], f["acked"]) for n, f in figures.items()} == {
        "rr": ("4", "4"),
        "run": ("3", "3"),
        "manual": ("1", "0"),
        "pulled": ("1", "1"),
    }


def test_no_object_reaches_into_another_ones_private_attributes() -> None:
    found = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert found == []


def test_a_queued_message_and_a_received_message_have_their_own_names() -> None:
    assert model.QueuedMessage.__name__ == "QueuedMessage"
    assert mbroker.client.Message.__name__ != model.QueuedMessage.__name__
    for path in CORE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        assert "Message" not in classes, path.name


def test_dead_code_is_gone() -> None:
    assert not hasattr(model.Consumer, "has_room")
    assert not hasattr(model.Queue, "is_full")


def test_one_function_checks_a_binding() -> None:
    """BIND, UNBIND and a SUBSCRIBE to an exchange share one check."""
    sources = "".join(p.read_text(encoding="utf-8") for p in CORE.glob("*.py"))
    assert sources.count("a direct exchange binds keys, not patterns") == 1
    assert "_binding_pair" not in sources


class _Target:
    def push(self, sid: int, tag: int, message: model.QueuedMessage) -> None:
        pass

    def push_many(self, sid: int, tag: int, messages: list[model.QueuedMessage]) -> None:
        pass

    def push_run(self, sid: int, tag: int, route: bytes, payloads: list[bytes]) -> None:
        pass

    def cancelled(self, sid: int, reason: str) -> None:
        pass

    def slow(self, sid: int) -> None:
        pass
