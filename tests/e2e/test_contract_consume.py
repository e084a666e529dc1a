"""Contract sections 3-4, consuming: SUBSCRIBE, UNSUBSCRIBE, PULL, ACK, NACK, TOUCH,
competing consumers, prefetch, redelivery, ack-timeout, and private subscription queues."""

from __future__ import annotations

import re
import time

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import (
    Client,
    connect,
    fill,
    poll,
    queue,
    unique,
)
from tests.helpers.targets import figures, pull_all, stats_show, status_and_msgs

# ---------------------------------------------------------------- SUBSCRIBE


def test_the_subscribe_reply_comes_before_its_messages(client: Client, on_node: bool) -> None:
    q = queue(client)
    fill(client, q, "a", "b")
    client.send(f"SUBSCRIBE {q}\r\nPING\r\n".encode())
    assert client.readline() == b"+OK 1"
    if on_node:  # (deliveries come from Redis on their own time: the +PONG may be first)
        assert client.read_reply() == ([], b"+PONG")
        assert [m.payload for m in client.msgs(2)] == [b"a", b"b"]
        return
    assert [m.payload for m in client.msgs(2)] == [b"a", b"b"]
    assert client.readline() == b"+PONG"


def test_sids_and_tags_count_per_connection(
    broker: BrokerProcess, client: Client, on_node: bool
) -> None:
    q1, q2 = queue(client), queue(client)
    assert client.ok(f"SUBSCRIBE {q1}") == "+OK 1"
    assert client.ok(f"SUBSCRIBE {q2}") == "+OK 2"
    fill(client, q1, "a")
    fill(client, q2, "b")
    with connect(broker) as other:
        q3 = queue(other)
        fill(other, q3, "c")
        assert other.ok(f"SUBSCRIBE {q3}") == "+OK 1"
        m = other.read_msg()
        assert (m.sid, m.tag) == (1, 1)
    fill(client, q1, "d")
    m1, m2, m4 = client.read_msg(), client.read_msg(), client.read_msg()
    got = [(m.sid, m.tag, m.payload) for m in (m1, m2, m4)]
    if on_node:  # (two queues' MSGs come as the node reads them: docs/cluster.rst)
        assert [tag for _, tag, _ in got] == [1, 2, 3]  # (in the order they came)
        assert sorted((p, sid) for sid, _, p in got) == [(b"a", 1), (b"b", 2), (b"d", 1)]
        assert [p for _, _, p in got if p != b"b"] == [b"a", b"d"]  # (one queue: FIFO)
    else:
        assert got == [(1, 1, b"a"), (2, 2, b"b"), (1, 3, b"d")]
    fill(client, q1, "e")  # goes to the subscription, not to a pull: same counter
    assert client.read_msg().tag == 4


def test_tags_count_pushes_and_pulls_alike(client: Client) -> None:
    q, sq = queue(client), queue(client)
    fill(client, q, "a", "b")
    assert [m.tag for m in client.pull(f"PULL {q}")] == [1]
    client.ok(f"SUBSCRIBE {sq}")
    fill(client, sq, "x")
    assert client.read_msg().tag == 2
    assert [m.tag for m in client.pull(f"PULL {q} ack=manual")] == [3]


def test_msg_frames(broker: BrokerProcess, client: Client) -> None:
    ex = unique("ex")
    client.ok(f"CREATE {ex} topic")
    assert client.ok(f"SUBSCRIBE {ex} news.#") == "+OK 1"
    with connect(broker) as publisher:
        publisher.ok(f"PUBLISH {ex} news.uk :hello")
        publisher.ok(f"PUBLISH {ex} sport :ignored")
        publisher.ok(f"PUBLISH {ex} news :x y")
    m1, m2 = client.msgs(2)
    assert m1.header == f"MSG 1 1 {ex} news.uk 5".encode()
    assert m2.header == f"MSG 1 2 {ex} news 3".encode()
    assert m2.payload == b"x y"


def test_subscribe_errors(client: Client) -> None:
    q = queue(client)
    assert client.code(f"SUBSCRIBE {unique()}") == "NOT_FOUND"
    assert client.err(f"SUBSCRIBE {q} a.b").startswith("-ERR BAD_ARGS ")
    assert client.code(f"SUBSCRIBE {q} ack-timeout=100") == "BAD_ARGS"
    assert client.code(f"SUBSCRIBE {q} ack=auto ack-timeout=100") == "BAD_ARGS"
    assert client.ok(f"SUBSCRIBE {q} ack=manual ack-timeout=100 prefetch=5") == "+OK 1"


# ---------------------------------------------------------------- competing consumers


def test_competing_consumers_round_robin(broker: BrokerProcess, client: Client) -> None:
    q = queue(client)
    consumers = [connect(broker) for _ in range(3)]
    try:
        for c in consumers:
            assert c.ok(f"SUBSCRIBE {q}") == "+OK 1"
        fill(client, q, *map(str, range(9)))
        for i, c in enumerate(consumers):
            assert [m.payload for m in c.msgs(3)] == [str(n).encode() for n in (i, i + 3, i + 6)]
    finally:
        for c in consumers:
            c.close()


def test_round_robin_skips_consumers_without_prefetch_room(
    broker: BrokerProcess, on_node: bool
) -> None:
    with connect(broker) as a, connect(broker) as b, connect(broker) as pub:
        q = queue(pub)
        a.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
        b.ok(f"SUBSCRIBE {q} ack=manual prefetch=2")
        fill(pub, q, "0", "1", "2", "3", "4")
        assert [m.payload for m in a.msgs(1)] == [b"0"]
        assert [m.payload for m in b.msgs(2)] == [b"1", b"2"]
        assert a.quiet(0.1) and b.quiet(0.01)
        figures(on_node, lambda: pub.stats(q)["messages"] == "2")
        status, msgs = status_and_msgs(b, "ACK 1", 1, on_node)  # b's first tag: room for one
        assert (status, [m.payload for m in msgs]) == (b"+OK 1", [b"3"])
        status, msgs = status_and_msgs(a, "ACK 1", 1, on_node)
        assert (status, [m.payload for m in msgs]) == (b"+OK 1", [b"4"])


def test_a_pull_competes_with_subscribers(broker: BrokerProcess, client: Client) -> None:
    q = queue(client)
    with connect(broker) as sub:
        sub.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
        fill(client, q, "a", "b", "c")
        assert sub.read_msg().payload == b"a"
        assert client.payloads(f"PULL {q} max=5") == [b"b", b"c"]
        assert sub.quiet(0.05)


# ---------------------------------------------------------------- prefetch and acks


def test_manual_prefetch_defaults_to_1000(client: Client, on_node: bool) -> None:
    q = queue(client)
    client.send("".join(f"PUBLISH {q} :{i}\r\n" for i in range(1001)).encode())
    for _ in range(1001):
        assert client.read_reply() == ([], b"+OK 1")
    assert client.ok(f"SUBSCRIBE {q} ack=manual") == "+OK 1"
    msgs = client.msgs(1000)
    assert [m.payload for m in msgs] == [str(i).encode() for i in range(1000)]
    assert client.quiet(0.1)
    status, msgs = status_and_msgs(client, "ACK 1-10", 1, on_node)
    assert (status, [m.payload for m in msgs]) == (b"+OK 10", [b"1000"])


def test_prefetch_0_is_unlimited_and_auto_is_unlimited(client: Client, on_node: bool) -> None:
    manual, auto = queue(client), queue(client)
    n = 1500
    for q in (manual, auto):
        client.send("".join(f"PUBLISH {q} :{i}\r\n" for i in range(n)).encode())
        for _ in range(n):
            client.read_reply()
    assert client.ok(f"SUBSCRIBE {manual} ack=manual prefetch=0") == "+OK 1"
    assert len(client.msgs(n)) == n
    assert client.ok(f"SUBSCRIBE {auto}") == "+OK 2"
    assert len(client.msgs(n)) == n
    figures(on_node, lambda: client.stats(manual)["unacked"] == str(n))

    def auto_figures() -> bool:
        stats = client.stats(auto)
        return (stats["messages"], stats["unacked"], stats["acked"]) == ("0", "0", str(n))

    figures(on_node, auto_figures)


def test_manual_ack(client: Client, on_node: bool) -> None:
    q = queue(client)
    fill(client, q, "a", "b", "c")
    client.ok(f"SUBSCRIBE {q} ack=manual")
    tags = [m.tag for m in client.msgs(3)]
    assert tags == [1, 2, 3]
    stats_show(on_node, client, q, messages="0", unacked="3")
    assert client.ok("ACK 1,3") == "+OK 2"
    stats_show(on_node, client, q, unacked="1")
    assert client.code("ACK 1") == "NOT_FOUND"  # settled already
    assert client.ok("ACK 2") == "+OK 1"
    assert client.stats(q)["acked"] == "3"


def test_ack_lists_and_ranges(client: Client, on_node: bool) -> None:
    q = queue(client)
    fill(client, q, *"abcdefgh")
    client.pull(f"PULL {q} max=8 ack=manual")  # tags 1-8
    assert client.ok("ACK 2-3") == "+OK 2"
    assert client.ok("ACK 1-5") == "+OK 3"  # a range covers what is outstanding in it
    assert client.err("ACK 6,9,7,1-5,20-30") == "-ERR NOT_FOUND 9,1-5,20-30"
    stats_show(on_node, client, q, unacked="1")  # 6 and 7 were acknowledged all the same
    assert client.ok("ACK 8-1000000000") == "+OK 1"


def test_auto_acked_and_foreign_tags_are_not_outstanding(broker: BrokerProcess) -> None:
    with connect(broker) as a, connect(broker) as b:
        q = queue(a)
        fill(a, q, "x", "y")
        a.pull(f"PULL {q}")  # tag 1, ack=auto
        assert a.code("ACK 1") == "NOT_FOUND"
        b.pull(f"PULL {q} ack=manual")  # b's tag 1
        assert a.code("ACK 1") == "NOT_FOUND"
        assert a.code("NACK 1") == "NOT_FOUND"
        assert a.code("TOUCH 1") == "NOT_FOUND"
        assert b.ok("ACK 1") == "+OK 1"


# ---------------------------------------------------------------- redelivery


def test_redelivery_after_the_consumer_disconnects(
    broker: BrokerProcess, client: Client, on_node: bool
) -> None:
    q = queue(client)
    fill(client, q, "a", "b", "c", "d")
    worker = connect(broker)
    worker.ok(f"SUBSCRIBE {q} ack=manual prefetch=3")
    assert [m.payload for m in worker.msgs(3)] == [b"a", b"b", b"c"]
    status, msgs = status_and_msgs(worker, "ACK 2", 1, on_node)  # the ACK made room for d
    assert (status, [m.payload for m in msgs]) == (b"+OK 1", [b"d"])
    worker.close()  # no QUIT: the connection just drops
    msgs = client.pull(f"PULL {q} max=5 wait=5000")
    assert [(m.payload, m.attrs) for m in msgs] == [
        (b"a", {"redelivered": "1"}),
        (b"c", {"redelivered": "1"}),
        (b"d", {"redelivered": "1"}),
    ]


def test_redelivered_counts_every_delivery(client: Client) -> None:
    q = queue(client)
    fill(client, q, "x")
    for n in range(4):
        (m,) = client.pull(f"PULL {q} ack=manual")
        assert m.attrs == ({"redelivered": str(n)} if n else {})
        assert m.header.endswith(b" redelivered=%d 1" % n if n else f"{q} - 1".encode())
        assert client.ok(f"NACK {m.tag}") == "+OK 1"
    assert client.stats(q)["redelivered"] == "4"


def test_unsubscribe_returns_unacked_messages(client: Client) -> None:
    q = queue(client)
    fill(client, q, "a", "b")
    client.ok(f"SUBSCRIBE {q} ack=manual")
    client.msgs(2)
    assert client.ok("UNSUBSCRIBE 1") == "+OK"
    assert client.code("UNSUBSCRIBE 1") == "NOT_FOUND"
    assert client.code("ACK 1") == "NOT_FOUND"
    msgs = client.pull(f"PULL {q} max=5")
    assert [(m.payload, m.attrs) for m in msgs] == [
        (b"a", {"redelivered": "1"}),
        (b"b", {"redelivered": "1"}),
    ]


def test_nack_requeues_at_the_head(client: Client, on_node: bool) -> None:
    q = queue(client)
    fill(client, q, "a", "b", "c", "d")
    client.pull(f"PULL {q} max=2 ack=manual")  # a=1, b=2
    assert client.ok("NACK 2,1") == "+OK 2"  # back in delivery order, whatever the list
    msgs = pull_all(client, q, 4, on_node)
    assert [m.payload for m in msgs] == [b"a", b"b", b"c", b"d"]


def test_nack_requeue_0_without_dead_letter_drops(client: Client, on_node: bool) -> None:
    q = queue(client)
    fill(client, q, "a")
    client.pull(f"PULL {q} ack=manual")
    assert client.ok("NACK 1 requeue=0") == "+OK 1"
    stats_show(on_node, client, q, messages="0", unacked="0")


def test_nack_with_delay(client: Client, on_node: bool) -> None:
    # (a node's PULL without wait waits up to 250 ms for Redis: docs/cluster.rst)
    delay = 2000 if on_node else 200
    q = queue(client)
    fill(client, q, "later")
    client.pull(f"PULL {q} ack=manual")
    start = time.monotonic()
    assert client.ok(f"NACK 1 delay={delay}") == "+OK 1"
    assert client.pull(f"PULL {q}") == []
    if on_node:  # (it waits on the node; Redis counts it delivered, not acknowledged)
        figures(on_node, lambda: client.stats(q)["unacked"] == "1")
    else:
        assert client.stats(q)["messages"] == "1"  # still counted, not deliverable
    (m,) = client.pull(f"PULL {q} wait=5000")
    assert time.monotonic() - start >= delay / 1000 - 0.01
    assert (m.payload, m.attrs) == (b"later", {"redelivered": "1"})


def test_nack_requeue_1_is_the_default_and_delay_0_is_at_once(client: Client) -> None:
    q = queue(client)
    fill(client, q, "x")
    client.pull(f"PULL {q} ack=manual")
    assert client.ok("NACK 1 requeue=1 delay=0") == "+OK 1"
    assert client.payloads(f"PULL {q}") == [b"x"]


def test_ack_timeout_redelivers_and_voids_the_old_tag(client: Client) -> None:
    q = queue(client)
    fill(client, q, "slow")
    start = time.monotonic()
    (m,) = client.pull(f"PULL {q} ack=manual ack-timeout=100")
    (again,) = client.pull(f"PULL {q} ack=manual wait=5000")
    assert time.monotonic() - start >= 0.09
    assert again.attrs == {"redelivered": "1"} and again.tag == m.tag + 1
    assert client.err(f"ACK {m.tag}") == f"-ERR NOT_FOUND {m.tag}"
    assert client.ok(f"ACK {again.tag}") == "+OK 1"


def test_ack_timeout_on_a_subscription(broker: BrokerProcess, client: Client) -> None:
    q = queue(client)
    with connect(broker) as slow:
        slow.ok(f"SUBSCRIBE {q} ack=manual ack-timeout=100")
        fill(client, q, "x")
        assert slow.read_msg().tag == 1
        again = slow.read_msg()  # back in the queue after 100 ms, and to the same consumer
        assert (again.tag, again.attrs) == (2, {"redelivered": "1"})
        assert slow.code("ACK 1") == "NOT_FOUND"
        assert slow.ok("ACK 2") == "+OK 1"


def test_touch_restarts_the_ack_timeout(broker: BrokerProcess, client: Client) -> None:
    q = queue(client)
    fill(client, q, "work")
    with connect(broker) as watcher:
        start = time.monotonic()
        (m,) = client.pull(f"PULL {q} ack=manual ack-timeout=250")
        watcher.send(f"PULL {q} wait=5000\r\n".encode())
        assert client.quiet(0.15)  # 150 ms of work
        touched = time.monotonic()  # no later than the broker restarts the timer
        assert client.ok(f"TOUCH {m.tag}") == "+OK 1"
        data, status = watcher.read_reply()
        redelivered = time.monotonic()
    assert status == b"+OK 1" and len(data) == 1
    assert redelivered - touched >= 0.24
    assert redelivered - start >= 0.39


def test_touch_errors(client: Client) -> None:
    q = queue(client)
    fill(client, q, "x")
    client.pull(f"PULL {q} ack=manual")  # no ack-timeout: TOUCH is harmless
    assert client.ok("TOUCH 1") == "+OK 1"
    assert client.err("TOUCH 1,2") == "-ERR NOT_FOUND 2"
    assert client.ok("ACK 1") == "+OK 1"
    assert client.code("TOUCH 1") == "NOT_FOUND"


def test_max_deliver_without_dead_letter_drops(client: Client) -> None:
    q = queue(client, "max-deliver=2")
    fill(client, q, "poison", "fine")
    (m,) = client.pull(f"PULL {q} ack=manual")
    client.ok(f"NACK {m.tag}")
    (m,) = client.pull(f"PULL {q} ack=manual")
    assert m.attrs == {"redelivered": "1"}
    client.ok(f"NACK {m.tag}")
    assert client.payloads(f"PULL {q} max=5") == [b"fine"]


def test_max_deliver_counts_ack_timeouts(client: Client, on_node: bool) -> None:
    dead = queue(client)
    q = queue(client, "max-deliver=1", f"dead-letter={dead}")
    fill(client, q, "x")
    client.pull(f"PULL {q} ack=manual ack-timeout=50")
    (m,) = client.pull(f"PULL {dead} wait=5000")
    assert (m.payload, m.source, m.attrs) == (b"x", q, {"reason": "delivery-limit"})
    stats_show(on_node, client, q, messages="0")


# ---------------------------------------------------------------- PULL


def test_pull_max(client: Client) -> None:
    q = queue(client)
    fill(client, q, "1", "2", "3", "4")
    assert client.payloads(f"PULL {q}") == [b"1"]
    assert client.payloads(f"PULL {q} max=2") == [b"2", b"3"]
    assert client.payloads(f"PULL {q} max=100") == [b"4"]
    assert client.payloads(f"PULL {q} max=100") == []
    assert all(m.sid == 0 for m in client.pull(f"PULL {q}"))


def test_pull_defaults_to_ack_auto(client: Client, on_node: bool) -> None:
    q = queue(client)
    fill(client, q, "x")
    client.pull(f"PULL {q}")
    stats_show(on_node, client, q, messages="0", unacked="0", acked="1")


def test_pull_wait_times_out(client: Client) -> None:
    q = queue(client)
    start = time.monotonic()
    assert client.pull(f"PULL {q} wait=150") == []
    assert time.monotonic() - start >= 0.14


def test_pull_wait_returns_as_soon_as_a_message_comes(
    broker: BrokerProcess, client: Client
) -> None:
    q = queue(client)
    client.send(f"PULL {q} max=5 wait=10000\r\nPING\r\n".encode())
    assert client.quiet(0.1)  # it waits, and the PING waits behind it
    start = time.monotonic()
    with connect(broker) as publisher:
        fill(publisher, q, "late")
    data, status = client.read_reply()
    assert time.monotonic() - start < 5
    assert status == b"+OK 1" and [getattr(m, "payload", None) for m in data] == [b"late"]
    assert client.readline() == b"+PONG"


def test_commands_after_a_waiting_pull_wait_behind_it(client: Client) -> None:
    q, other = queue(client), queue(client)
    fill(client, other, "ready")
    client.send(f"PULL {q} wait=200\r\nPULL {other}\r\nPUBLISH {q} :mine\r\nPING\r\n".encode())
    assert client.read_reply() == ([], b"+OK 0")  # its own PUBLISH came after it
    assert [getattr(m, "payload", None) for m in client.read_reply()[0]] == [b"ready"]
    assert client.read_reply() == ([], b"+OK 1")
    assert client.readline() == b"+PONG"


def test_pull_errors(client: Client) -> None:
    ex = unique("ex")
    client.ok(f"CREATE {ex} fanout")
    assert client.err(f"PULL {ex}").startswith("-ERR WRONG_KIND ")
    assert client.code(f"PULL {unique()}") == "NOT_FOUND"


# ---------------------------------------------------------------- private queues


def _private(c: Client, before: set[str]) -> str:
    (name,) = set(c.listing()) - before
    return name


def test_subscribing_to_an_exchange_makes_a_private_queue(
    broker: BrokerProcess, client: Client
) -> None:
    ex = unique("ex")
    client.ok(f"CREATE {ex} topic")
    before = set(client.listing())
    assert client.ok(f"SUBSCRIBE {ex}") == "+OK 1"  # pattern "#"
    private = _private(client, before)
    assert re.fullmatch(r"mbroker\.sub\.[0-9]+\.1", private)
    assert client.listing()[ex]["bindings"] == "1"
    with connect(broker) as publisher:
        assert publisher.ok(f"PUBLISH {ex} any.key :x") == "+OK 1"
        assert publisher.ok(f"PUBLISH {ex} :y") == "+OK 1"
        stats = publisher.stats(private)
        assert (stats["type"], stats["consumers"], stats["durable"]) == ("queue", "1", "0")
    assert [m.payload for m in client.msgs(2)] == [b"x", b"y"]
    assert client.ok("UNSUBSCRIBE 1") == "+OK"
    assert private not in client.listing()
    assert client.listing()[ex]["bindings"] == "0"


def test_a_private_queue_goes_with_its_connection(broker: BrokerProcess, client: Client) -> None:
    ex = unique("ex")
    client.ok(f"CREATE {ex} fanout")
    before = set(client.listing())
    with connect(broker) as sub:
        sub.ok(f"SUBSCRIBE {ex}")
        private = _private(client, before)
    poll(lambda: private not in client.listing())
    assert client.listing()[ex]["bindings"] == "0"


def test_subscription_patterns_by_exchange_kind(broker: BrokerProcess, client: Client) -> None:
    topic, direct, fanout = unique("t"), unique("d"), unique("f")
    client.ok(f"CREATE {topic} topic")
    client.ok(f"CREATE {direct} direct")
    client.ok(f"CREATE {fanout} fanout")
    assert client.ok(f"SUBSCRIBE {topic} a.*") == "+OK 1"
    assert client.ok(f"SUBSCRIBE {direct}") == "+OK 2"  # the empty key
    assert client.ok(f"SUBSCRIBE {direct} k") == "+OK 3"
    assert client.ok(f"SUBSCRIBE {fanout} ignored.*") == "+OK 4"
    with connect(broker) as p:
        assert [
            p.ok(f"PUBLISH {topic} a.b :1"),
            p.ok(f"PUBLISH {topic} a :no"),
            p.ok(f"PUBLISH {direct} :2"),
            p.ok(f"PUBLISH {direct} k :3"),
            p.ok(f"PUBLISH {direct} k.x :no"),
            p.ok(f"PUBLISH {fanout} whatever :4"),
        ] == ["+OK 1", "+OK 0", "+OK 1", "+OK 1", "+OK 0", "+OK 1"]
    msgs = client.msgs(4)
    assert sorted((m.sid, m.payload) for m in msgs) == [
        (1, b"1"),
        (2, b"2"),
        (3, b"3"),
        (4, b"4"),
    ]
    assert client.quiet(0.05)


# ---------------------------------------------------------------- pushes and replies


def test_pushes_never_come_inside_a_reply(broker: BrokerProcess, client: Client) -> None:
    ex, q = unique("ex"), queue(client)
    client.ok(f"CREATE {ex} fanout")
    assert client.ok(f"SUBSCRIBE {ex}") == "+OK 1"
    publisher = connect(broker)
    try:
        publisher.send(
            b"".join(b"PUBLISH %s :%d\r\n" % (ex.encode(), i) for i in range(3000))
            + b"".join(b"PUBLISH %s :%d\r\n" % (q.encode(), i) for i in range(200))
        )
        commands = [f"LIST\r\nSTATS\r\nPULL {q} max=20\r\nSTATS {q}\r\n".encode()] * 10
        client.send(b"".join(commands))
        replies, pushes, in_reply = 0, 0, False
        while replies < 40:
            line = client.readline()
            if line.startswith(b"MSG "):
                size = int(line.split()[-1])
                client.read_exact(size)
                assert client.readline() == b""
                if line.startswith(b"MSG 1 "):
                    assert not in_reply, "a pushed MSG inside a reply's data lines"
                    pushes += 1
                    continue
            if line[:1] in (b"+", b"-"):
                replies, in_reply = replies + 1, False
            else:
                in_reply = True
        for _ in range(3200):
            publisher.read_reply()
    finally:
        publisher.close()
    assert pushes > 0
