"""``mbroker.server.tap``: option parsing and the service it makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from mbroker import config
from mbroker.server.service import DEFAULT_BACKLOG, BrokerService
from mbroker.server.tap import DEFAULT_DATA_DIR, DEFAULT_LISTEN, Options, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    options = parse()
    assert options["listen"] == [DEFAULT_LISTEN]
    assert options["data-dir"] == DEFAULT_DATA_DIR
    assert not options["memory"]
    assert options["fsync"] == "always"
    assert options["max-payload"] == config.DEFAULT_MAX_PAYLOAD
    assert options["max-line"] == config.DEFAULT_MAX_LINE
    assert options["private-max-length"] == config.DEFAULT_PRIVATE_MAX_LENGTH
    assert options["private-max-bytes"] == config.DEFAULT_PRIVATE_MAX_BYTES
    assert options["backlog"] == DEFAULT_BACKLOG == 1024


def test_listen_repeats_and_replaces_the_default() -> None:
    options = parse("--listen", "tcp:1", "--listen=unix:/tmp/x.sock")
    assert options["listen"] == ["tcp:1", "unix:/tmp/x.sock"]


def test_limits_are_integers() -> None:
    options = parse(
        "--max-payload=10",
        "--max-line",
        "20",
        "--private-max-length=30",
        "--private-max-bytes=40",
        "--data-dir=/tmp/d",
    )
    assert (
        options["max-payload"],
        options["max-line"],
        options["private-max-length"],
        options["private-max-bytes"],
        options["data-dir"],
    ) == (10, 20, 30, 40, "/tmp/d")


@pytest.mark.parametrize(
    "option", ["max-payload", "max-line", "private-max-length", "private-max-bytes", "backlog"]
)
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "ten", ""])
def test_limits_must_be_positive_integers(option: str, value: str) -> None:
    with pytest.raises(usage.UsageError, match=f"--{option} must be a positive integer"):
        parse(f"--{option}={value}")


def test_make_service() -> None:
    options = parse("--listen=tcp:0", "--max-payload=100", "--max-line=200", "--data-dir=d")
    service = makeService(options)
    assert isinstance(service, BrokerService)
    assert service.endpoints == ["tcp:0"]
    assert service.data_dir == "d"
    assert service.config == config.Config(max_payload=100, max_line=200)
    assert not service.running


def test_memory_means_no_data_dir() -> None:
    service = makeService(parse("--memory", "--data-dir=d"))
    assert isinstance(service, BrokerService)
    assert service.data_dir is None


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_fsync_policies(policy: str) -> None:
    service = makeService(parse(f"--fsync={policy}"))
    assert isinstance(service, BrokerService)
    assert service.fsync == policy


def test_fsync_must_be_a_known_policy() -> None:
    with pytest.raises(usage.UsageError, match="--fsync must be always, interval or never"):
        parse("--fsync=sometimes")


def test_section_6_limits_reach_the_config() -> None:
    service = makeService(
        parse("--max-connections=7", "--max-subscriptions=3", "--disconnect-slow")
    )
    assert isinstance(service, BrokerService)
    assert service.config.max_connections == 7
    assert service.config.max_subscriptions == 3
    assert service.config.slow_consumer_disconnect


def test_backlog_reaches_the_service() -> None:
    service = makeService(parse("--backlog=4096"))
    assert isinstance(service, BrokerService)
    assert service.backlog == 4096
    default = makeService(parse())
    assert isinstance(default, BrokerService)
    assert default.backlog == DEFAULT_BACKLOG


def test_dedup_options_reach_the_config(tmp_path: Path) -> None:
    default = makeService(parse())
    assert isinstance(default, BrokerService)
    assert default.config.dedup_window == config.DEFAULT_DEDUP_WINDOW == 120_000
    assert default.config.dedup_max_ids == config.DEFAULT_DEDUP_MAX_IDS == 100_000
    service = makeService(parse("--dedup-window=0", "--dedup-max-ids", "7"))
    assert isinstance(service, BrokerService)
    assert (service.config.dedup_window, service.config.dedup_max_ids) == (0, 7)
    with pytest.raises(usage.UsageError, match="--dedup-window must be a non-negative"):
        parse("--dedup-window=-1")
    with pytest.raises(usage.UsageError, match="--dedup-max-ids must be a positive integer"):
        parse("--dedup-max-ids=0")
    conf = tmp_path / "mbroker.toml"
    conf.write_text("dedup-window = 5000\ndedup_max_ids = 9\n")
    from_file = parse(f"--config={conf}")
    assert from_file.config_problem is None
    assert (from_file["dedup-window"], from_file["dedup-max-ids"]) == (5000, 9)


def test_cluster_options_reach_the_service() -> None:
    service = makeService(parse("--cluster", "redis://127.0.0.1:7000,h:7001", "--node-name", "n1"))
    assert isinstance(service, BrokerService)
    assert service.cluster == config.ClusterConfig("redis://127.0.0.1:7000,h:7001", "n1", 0)
    replicated = makeService(parse("--cluster=h:1", "--cluster-replicas-ack=1"))
    assert isinstance(replicated, BrokerService)
    assert replicated.cluster is not None and replicated.cluster.replicas_ack == 1
    assert replicated.cluster.node_name  # (a default: host-pid)
    plain = makeService(parse())
    assert isinstance(plain, BrokerService) and plain.cluster is None


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "n\n1"])
def test_node_names_are_checked(name: str) -> None:
    with pytest.raises(usage.UsageError, match="--node-name must be"):
        parse("--cluster=h:1", "--node-name", name)


@pytest.mark.parametrize("url", ["redis://", "http://h:1", "h", "h:port"])
def test_cluster_needs_host_port_nodes(url: str) -> None:
    with pytest.raises(usage.UsageError, match="--cluster: "):
        parse("--cluster", url)


def test_cluster_options_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "mbroker.toml"
    path.write_text('cluster = "redis://h:7000"\nnode-name = "n2"\ncluster-replicas-ack = 1\n')
    options = parse("--config", str(path))
    assert options.config_problem is None
    assert (options["cluster"], options["node-name"], options["cluster-replicas-ack"]) == (
        "redis://h:7000",
        "n2",
        1,
    )
