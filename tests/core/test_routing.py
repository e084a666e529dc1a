"""Tests for mbroker.core.routing: one contract run against every matcher, then topic specifics."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mbroker
from mbroker.core.routing import (
    DirectMatcher,
    FanoutMatcher,
    Matcher,
    TopicMatcher,
    _Node,
    make_matcher,
)

KINDS = ["direct", "fanout", "topic"]


def _words(text: str) -> list[str]:
    return text.split(".") if text else []


def topic_reference(pattern: str, key: str) -> bool:
    """Slow, obviously correct AMQP topic matching: recursion over words, memoized."""
    p, k = _words(pattern), _words(key)

    @cache
    def go(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(k)
        if p[i] == "#":
            return go(i + 1, j) or (j < len(k) and go(i, j + 1))
        return j < len(k) and p[i] in ("*", k[j]) and go(i + 1, j + 1)

    return go(0, 0)


REFERENCE: dict[str, Callable[[str, str], bool]] = {
    "direct": lambda pattern, key: pattern == key,
    "fanout": lambda pattern, key: True,
    "topic": topic_reference,
}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def matcher(kind: str) -> Matcher[str]:
    return make_matcher(kind)


def test_make_matcher_types() -> None:
    assert isinstance(make_matcher("direct"), DirectMatcher)
    assert isinstance(make_matcher("fanout"), FanoutMatcher)
    assert isinstance(make_matcher("topic"), TopicMatcher)
    with pytest.raises(ValueError):
        make_matcher("headers")


def test_static_conformance() -> None:
    # Checked by mypy: each class satisfies the Matcher protocol.
    matchers: list[Matcher[str]] = [DirectMatcher(), FanoutMatcher(), TopicMatcher()]
    assert all(len(m) == 0 for m in matchers)


# --- contract: every matcher -------------------------------------------------------


def test_empty(matcher: Matcher[str]) -> None:
    assert list(matcher.match("a")) == []
    assert list(matcher.match("")) == []
    assert len(matcher) == 0
    assert list(matcher.bindings()) == []
    assert matcher.count_for("q") == 0


def test_exact_key_matches(matcher: Matcher[str]) -> None:
    assert matcher.add("a.b", "q1")
    assert list(matcher.match("a.b")) == ["q1"]


def test_empty_key_binding(matcher: Matcher[str]) -> None:
    matcher.add("", "q1")
    assert list(matcher.match("")) == ["q1"]


def test_add_twice_changes_nothing(matcher: Matcher[str]) -> None:
    assert matcher.add("k", "q1") is True
    assert matcher.add("k", "q1") is False
    assert len(matcher) == 1
    assert matcher.count_for("q1") == 1
    assert list(matcher.match("k")) == ["q1"]


def test_remove(matcher: Matcher[str]) -> None:
    matcher.add("k", "q1")
    matcher.add("k", "q2")
    assert matcher.remove("k", "q1") is True
    assert matcher.remove("k", "q1") is False
    assert matcher.remove("other", "q2") is False
    assert matcher.remove("k", "nobody") is False
    assert list(matcher.match("k")) == ["q2"]
    assert matcher.remove("k", "q2") is True
    assert list(matcher.match("k")) == []
    assert len(matcher) == 0


def test_remove_target(matcher: Matcher[str]) -> None:
    for pattern in ("a", "b", "c"):
        matcher.add(pattern, "q1")
    matcher.add("a", "q2")
    assert matcher.count_for("q1") == 3
    assert matcher.remove_target("q1") == 3
    assert matcher.remove_target("q1") == 0
    assert matcher.count_for("q1") == 0
    assert len(matcher) == 1
    assert list(matcher.bindings()) == [("a", "q2")]
    assert list(matcher.match("a")) == ["q2"]


def test_len_count_for_bindings(matcher: Matcher[str]) -> None:
    matcher.add("a", "q1")
    matcher.add("b", "q1")
    matcher.add("a", "q2")
    assert len(matcher) == 3
    assert matcher.count_for("q1") == 2
    assert matcher.count_for("q2") == 1
    assert sorted(matcher.bindings()) == [("a", "q1"), ("a", "q2"), ("b", "q1")]


def test_bindings_snapshot_allows_mutation(matcher: Matcher[str]) -> None:
    for i in range(5):
        matcher.add(f"k{i}", f"q{i}")
    for pattern, target in matcher.bindings():
        matcher.remove(pattern, target)
    assert len(matcher) == 0


def test_order_of_first_binding(matcher: Matcher[str]) -> None:
    # Bound to the key in the order q3, q1, q2, but first bound to the matcher q1, q2, q3.
    matcher.add("x", "q1")
    matcher.add("x", "q2")
    matcher.add("x", "q3")
    for target in ("q3", "q1", "q2"):
        matcher.add("k", target)
    assert list(matcher.match("k")) == ["q1", "q2", "q3"]
    # Losing every binding and coming back puts a target last.
    matcher.remove_target("q1")
    matcher.add("k", "q1")
    assert list(matcher.match("k")) == ["q2", "q3", "q1"]


def test_match_sees_changes(matcher: Matcher[str]) -> None:
    """Cached results are invalidated by add and remove."""
    assert list(matcher.match("k")) == []
    matcher.add("k", "q1")
    assert list(matcher.match("k")) == ["q1"]
    matcher.add("k", "q2")
    assert list(matcher.match("k")) == ["q1", "q2"]
    matcher.remove("k", "q1")
    assert list(matcher.match("k")) == ["q2"]
    matcher.remove_target("q2")
    assert list(matcher.match("k")) == []


def test_results_are_immutable(matcher: Matcher[str]) -> None:
    matcher.add("k", "q1")
    assert isinstance(matcher.match("k"), tuple)


def test_direct_is_equality() -> None:
    m: DirectMatcher[str] = DirectMatcher()
    m.add("a.b", "q1")
    m.add("*", "q2")
    m.add("#", "q3")
    assert m.match("a.b") == ("q1",)
    assert m.match("a") == ()
    assert m.match("") == ()
    assert m.match("a.b.c") == ()


def test_fanout_ignores_keys() -> None:
    m: FanoutMatcher[str] = FanoutMatcher()
    m.add("a", "q1")
    m.add("b", "q1")  # a distinct binding of the same target
    m.add("", "q2")
    assert len(m) == 3
    assert m.match("zzz") == ("q1", "q2")
    assert m.match("") == ("q1", "q2")
    m.remove("a", "q1")
    assert m.match("x") == ("q1", "q2")
    m.remove("b", "q1")
    assert m.match("x") == ("q2",)


# --- topic ---------------------------------------------------------------------------

TOPIC_CASES = [
    # (pattern, key, matches)
    ("", "", True),
    ("", "a", False),
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("*", "", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("a", "a", True),
    ("a", "b", False),
    ("a", "a.b", False),
    ("a.b", "a", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b", False),
    ("a.#", "", False),
    ("#.c", "c", True),
    ("#.c", "a.b.c", True),
    ("#.c", "a.c.d", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.b.c", True),
    ("a.#.c", "a.b.b.c", True),
    ("a.#.c", "a.b.b", False),
    ("a.#.c", "a.c.c", True),
    ("a.#.c", "c", False),
    ("*.#", "", False),
    ("*.#", "x", True),
    ("*.#", "x.y", True),
    ("#.*", "", False),
    ("#.*", "x", True),
    ("#.*", "x.y.z", True),
    ("#.#", "", True),
    ("#.#", "x", True),
    ("#.#", "x.y.z", True),
    ("*.*", "x", False),
    ("*.*", "x.y", True),
    ("#.*.#", "", False),
    ("#.*.#", "x", True),
    ("#.*.*", "x", False),
    ("#.*.*", "x.y", True),
    ("a.#.#.b", "a.b", True),
    ("a.#.#.b", "a.x.y.b", True),
    ("#.a.#", "a", True),
    ("#.a.#", "b.a.b", True),
    ("#.a.#", "b.b", False),
    ("stock.*.nyse", "stock.ibm.nyse", True),
    ("stock.*.nyse", "stock.ibm.nasdaq", False),
    ("*.orange.*", "quick.orange.rabbit", True),
    ("*.*.rabbit", "lazy.orange.rabbit", True),
    ("lazy.#", "lazy.orange.male.rabbit", True),
    ("*.orange.*", "quick.orange.male.rabbit", False),
    ("a-b_c.d", "a-b_c.d", True),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), TOPIC_CASES)
def test_topic_table(pattern: str, key: str, expected: bool) -> None:
    assert topic_reference(pattern, key) is expected  # the reference agrees with the table
    m: TopicMatcher[str] = TopicMatcher()
    m.add(pattern, "q")
    assert m.match(key) == (("q",) if expected else ())


def test_topic_all_cases_in_one_trie() -> None:
    """The whole table bound at once, one target per pattern: tries share prefixes."""
    m: TopicMatcher[str] = TopicMatcher()
    patterns = sorted({p for p, _, _ in TOPIC_CASES})
    for p in patterns:
        m.add(p, f"q:{p}")
    for key in sorted({k for _, k, _ in TOPIC_CASES}):
        expected = [f"q:{p}" for p in patterns if topic_reference(p, key)]
        assert list(m.match(key)) == expected, key


def test_topic_dedup() -> None:
    m: TopicMatcher[str] = TopicMatcher()
    m.add("a.*", "q1")
    m.add("a.#", "q1")
    m.add("#", "q1")
    m.add("a.b", "q2")
    m.add("#.b", "q2")
    assert m.match("a.b") == ("q1", "q2")
    assert m.match("a") == ("q1",)
    assert len(m) == 5
    assert m.count_for("q1") == 3


def test_topic_cache_invalidation() -> None:
    m: TopicMatcher[str] = TopicMatcher()
    m.add("a.*", "q1")
    assert m.match("a.b") == ("q1",)
    m.add("#.b", "q2")
    assert m.match("a.b") == ("q1", "q2")
    m.remove("a.*", "q1")
    assert m.match("a.b") == ("q2",)
    m.remove_target("q2")
    assert m.match("a.b") == ()
    m.add("a.b", "q3")
    assert m.match("a.b") == ("q3",)


def test_topic_cache_is_bounded() -> None:
    m: TopicMatcher[str] = TopicMatcher(cache_size=8)
    m.add("#", "q")
    for i in range(100):
        assert m.match(f"k{i}") == ("q",)
        assert len(m._cache) <= 8
    assert "k99" in m._cache  # the newest stays
    assert "k0" not in m._cache


def test_topic_cache_disabled() -> None:
    m: TopicMatcher[str] = TopicMatcher(cache_size=0)
    m.add("a", "q")
    assert m.match("a") == ("q",)
    assert m.match("a") == ("q",)
    assert len(m._cache) == 0


def _count_nodes(node: _Node[Any]) -> int:
    children = list(node.words.values()) + [c for c in (node.star, node.hash) if c]
    return 1 + sum(_count_nodes(c) for c in children)


def _expected_nodes(patterns: set[str]) -> int:
    prefixes = {tuple(_words(p)[:i]) for p in patterns for i in range(len(_words(p)) + 1)}
    return len(prefixes | {()})


def test_topic_prunes_trie() -> None:
    m: TopicMatcher[str] = TopicMatcher()
    patterns = ["a.b.c", "a.b", "a.*.#", "#.#.x", "#", "", "a.#.c"]
    for i, p in enumerate(patterns):
        m.add(p, f"q{i % 3}")
    assert _count_nodes(m._root) == _expected_nodes(set(patterns))
    m.remove("a.b.c", "q0")
    assert _count_nodes(m._root) == _expected_nodes(set(patterns) - {"a.b.c"})
    for target in ("q0", "q1", "q2"):
        m.remove_target(target)
    assert len(m) == 0
    assert _count_nodes(m._root) == 1
    assert m._root.is_empty()


def test_topic_shared_node_survives_other_target() -> None:
    m: TopicMatcher[str] = TopicMatcher()
    m.add("a.b", "q1")
    m.add("a.b", "q2")
    m.remove("a.b", "q1")
    assert m.match("a.b") == ("q2",)
    assert _count_nodes(m._root) == 3


def test_topic_pathological_hashes() -> None:
    m: TopicMatcher[str] = TopicMatcher()
    m.add(".".join(["#"] * 20), "q1")
    m.add(".".join(["#", "a"] * 10), "q2")
    m.add(".".join(["#", "b"] * 10), "q3")
    key = ".".join(["a"] * 30)
    assert m.match(key) == ("q1", "q2")
    assert m.match(".".join(["a"] * 9)) == ("q1",)
    assert m.match("") == ("q1",)


def test_topic_many_bindings() -> None:
    m: TopicMatcher[int] = TopicMatcher()
    for i in range(10_000):
        m.add(f"stock.s{i}.price", i)
    m.add("stock.*.price", -1)
    m.add("stock.#", -2)
    assert m.match("stock.s1234.price") == (1234, -1, -2)
    assert m.match("stock.nope.price") == (-1, -2)
    assert m.match("bond.s1.price") == ()
    for i in range(10_000):
        assert m.remove(f"stock.s{i}.price", i)
    assert _count_nodes(m._root) == _expected_nodes({"stock.*.price", "stock.#"})


# --- property: every matcher against its reference, under random changes -----------

PATTERN_WORDS = st.sampled_from(["a", "b", "*", "#"])
KEY_WORDS = st.sampled_from(["a", "b", "c"])
PATTERNS = st.lists(PATTERN_WORDS, max_size=5).map(".".join)
KEYS = st.lists(KEY_WORDS, max_size=5).map(".".join)
TARGETS = st.sampled_from(["q1", "q2", "q3", "q4"])
OPS = st.one_of(
    st.tuples(st.just("add"), PATTERNS, TARGETS),
    st.tuples(st.just("remove"), PATTERNS, TARGETS),
    st.tuples(st.just("remove_target"), st.just(""), TARGETS),
    st.tuples(st.just("match"), KEYS, st.just("")),
)


class ReferenceModel:
    """Bindings as target -> ordered set of patterns, in order of first binding."""

    def __init__(self, kind: str) -> None:
        self.matches = REFERENCE[kind]
        self.patterns: dict[str, dict[str, None]] = {}

    def add(self, pattern: str, target: str) -> bool:
        patterns = self.patterns.setdefault(target, {})
        new = pattern not in patterns
        patterns[pattern] = None
        return new

    def remove(self, pattern: str, target: str) -> bool:
        patterns = self.patterns.get(target, {})
        if pattern not in patterns:
            return False
        del patterns[pattern]
        if not patterns:
            del self.patterns[target]
        return True

    def remove_target(self, target: str) -> int:
        return len(self.patterns.pop(target, {}))

    def match(self, key: str) -> list[str]:
        return [t for t, ps in self.patterns.items() if any(self.matches(p, key) for p in ps)]


def check_against_reference(kind: str, ops: list[tuple[str, str, str]], probes: list[str]) -> None:
    m: Matcher[str] = make_matcher(kind)
    ref = ReferenceModel(kind)
    for op, arg, target in ops:
        if op == "add":
            assert m.add(arg, target) == ref.add(arg, target)
        elif op == "remove":
            assert m.remove(arg, target) == ref.remove(arg, target)
        elif op == "remove_target":
            assert m.remove_target(target) == ref.remove_target(target)
        else:
            assert list(m.match(arg)) == ref.match(arg)
    for key in probes:
        assert list(m.match(key)) == ref.match(key)
        assert list(m.match(key)) == ref.match(key)  # second time from the cache
    expected = [(p, t) for t, ps in ref.patterns.items() for p in ps]
    assert sorted(m.bindings()) == sorted(expected)
    assert len(m) == len(expected)
    for target in ("q1", "q2", "q3", "q4"):
        assert m.count_for(target) == len(ref.patterns.get(target, {}))
    if isinstance(m, TopicMatcher):
        live = {p for ps in ref.patterns.values() for p in ps}
        assert _count_nodes(m._root) == _expected_nodes(live)


# One test per kind rather than @pytest.mark.parametrize: pytest-twisted wraps the test
# function, and a parametrized @given test breaks on its second parameter.
REFERENCE_RUNS = settings(deadline=None, max_examples=300)
SCENARIOS = given(ops=st.lists(OPS, max_size=30), probes=st.lists(KEYS, max_size=10))


@REFERENCE_RUNS
@SCENARIOS
def test_direct_matches_reference(ops: list[tuple[str, str, str]], probes: list[str]) -> None:
    check_against_reference("direct", ops, probes)


@REFERENCE_RUNS
@SCENARIOS
def test_fanout_matches_reference(ops: list[tuple[str, str, str]], probes: list[str]) -> None:
    check_against_reference("fanout", ops, probes)


@REFERENCE_RUNS
@SCENARIOS
def test_topic_matches_reference(ops: list[tuple[str, str, str]], probes: list[str]) -> None:
    check_against_reference("topic", ops, probes)


# --- layering ----------------------------------------------------------------------------


def test_no_twisted_import() -> None:
    code = "import sys, mbroker.core.routing; assert 'twisted' not in sys.modules"
    root = str(Path(mbroker.__file__).resolve().parent.parent)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
