"""Binding indexes: which bound targets does a routing key reach?

Plain data structures for the three exchange kinds of the contract
(``docs/protocol.rst``, "Names, keys and patterns" and "Objects and routing"), with no
Twisted import: the namespace owns one matcher per exchange, and publishing calls
:meth:`Matcher.match` once per published message.

- :class:`DirectMatcher`: key equality, one dict lookup of a cached tuple.
- :class:`FanoutMatcher`: every bound target; the key is ignored.
- :class:`TopicMatcher`: AMQP topic patterns over ``.``-separated words, where
  ``*`` is exactly one word and ``#`` zero or more, kept in a trie of words.

A binding is a ``(pattern, target)`` pair; binding twice changes nothing.  A match
holds each target once, however many of its patterns match, in the order the
targets were first bound to the matcher (a target that loses all its bindings and
is bound again goes to the end).  Keys and patterns arrive already validated.
Results are tuples shared between calls: callers must not rely on their identity.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["DirectMatcher", "FanoutMatcher", "Matcher", "TopicMatcher", "make_matcher"]

T = TypeVar("T", bound=Hashable)

#: Default bound of the topic matcher's key -> result memo.
TOPIC_CACHE_SIZE = 4096


class Matcher(Protocol[T]):
    """The interface every exchange kind's binding index provides."""

    def add(self, pattern: str, target: T) -> bool:
        """Bind *target* with *pattern*; ``False`` if that binding already existed."""

    def remove(self, pattern: str, target: T) -> bool:
        """Unbind; ``False`` if the binding did not exist."""

    def remove_target(self, target: T) -> int:
        """Drop every binding of *target*; return how many there were."""

    def match(self, key: str) -> Sequence[T]:
        """The targets a message with routing key *key* goes to, each once."""

    def bindings(self) -> Iterator[tuple[str, T]]:
        """Every ``(pattern, target)`` binding, grouped by target."""

    def __len__(self) -> int:
        """The number of bindings."""

    def count_for(self, target: T) -> int:
        """The number of bindings of *target*."""


class _Bindings(Generic[T]):
    """What the three matchers share: the binding set, kept per target.

    Subclasses maintain their own match index in :meth:`_link` and :meth:`_unlink`,
    which are called only for real changes.
    """

    __slots__ = ("_patterns", "_rank", "_next_rank", "_size")

    def __init__(self) -> None:
        # target -> its patterns (an ordered set); ordered by first binding.
        self._patterns: dict[T, dict[str, None]] = {}
        # target -> position in that order, to sort match results.
        self._rank: dict[T, int] = {}
        self._next_rank = 0
        self._size = 0

    def add(self, pattern: str, target: T) -> bool:
        patterns = self._patterns.get(target)
        if patterns is None:
            patterns = self._patterns[target] = {}
            self._rank[target] = self._next_rank
            self._next_rank += 1
        elif pattern in patterns:
            return False
        patterns[pattern] = None
        self._size += 1
        self._link(pattern, target)
        return True

    def remove(self, pattern: str, target: T) -> bool:
        patterns = self._patterns.get(target)
        if patterns is None or pattern not in patterns:
            return False
        del patterns[pattern]
        self._size -= 1
        if not patterns:
            del self._patterns[target]
            del self._rank[target]
        self._unlink(pattern, target)
        return True

    def remove_target(self, target: T) -> int:
        patterns = self._patterns.get(target)
        if patterns is None:
            return 0
        doomed = list(patterns)
        for pattern in doomed:
            self.remove(pattern, target)
        return len(doomed)

    def bindings(self) -> Iterator[tuple[str, T]]:
        snapshot = [(p, t) for t, patterns in self._patterns.items() for p in patterns]
        return iter(snapshot)

    def __len__(self) -> int:
        return self._size

    def count_for(self, target: T) -> int:
        patterns = self._patterns.get(target)
        return 0 if patterns is None else len(patterns)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} bindings={self._size}>"

    def _ordered(self, targets: Iterable[T]) -> tuple[T, ...]:
        """*targets* (distinct) in order of first binding."""
        result = tuple(targets)
        if len(result) > 1:
            result = tuple(sorted(result, key=self._rank.__getitem__))
        return result

    def _link(self, pattern: str, target: T) -> None:
        raise NotImplementedError

    def _unlink(self, pattern: str, target: T) -> None:
        raise NotImplementedError


class DirectMatcher(_Bindings[T]):
    """Direct exchange: a key reaches the targets bound with exactly that key."""

    __slots__ = ("_by_key", "_cache")

    def __init__(self) -> None:
        super().__init__()
        self._by_key: dict[str, dict[T, None]] = {}
        # key -> result, filled on first match; dropped for a key whose bindings change.
        self._cache: dict[str, tuple[T, ...]] = {}

    def match(self, key: str) -> Sequence[T]:
        result = self._cache.get(key)
        if result is None:
            targets = self._by_key.get(key)
            if targets is None:
                return ()
            result = self._cache[key] = self._ordered(targets)
        return result

    def _link(self, pattern: str, target: T) -> None:
        self._by_key.setdefault(pattern, {})[target] = None
        self._cache.pop(pattern, None)

    def _unlink(self, pattern: str, target: T) -> None:
        targets = self._by_key[pattern]
        del targets[target]
        if not targets:
            del self._by_key[pattern]
        self._cache.pop(pattern, None)


class FanoutMatcher(_Bindings[T]):
    """Fanout exchange: every key reaches every bound target.

    Patterns are stored, so bindings with different keys are distinct bindings, but
    they play no part in matching.
    """

    __slots__ = ("_targets",)

    def __init__(self) -> None:
        super().__init__()
        self._targets: tuple[T, ...] | None = ()

    def match(self, key: str) -> Sequence[T]:
        targets = self._targets
        if targets is None:
            # The per-target dict is already in order of first binding.
            targets = self._targets = tuple(self._patterns)
        return targets

    def _link(self, pattern: str, target: T) -> None:
        self._targets = None

    def _unlink(self, pattern: str, target: T) -> None:
        self._targets = None


class _Node(Generic[T]):
    """A trie node: the pattern prefix that leads here, and what comes next."""

    __slots__ = ("words", "star", "hash", "targets", "is_hash")

    def __init__(self, is_hash: bool = False) -> None:
        self.words: dict[str, _Node[T]] = {}  # literal word -> child
        self.star: _Node[T] | None = None  # child for '*'
        self.hash: _Node[T] | None = None  # child for '#'
        self.targets: dict[T, None] = {}  # patterns ending here (an ordered set)
        self.is_hash = is_hash  # reached by '#': absorbs any number of words

    def is_empty(self) -> bool:
        return not (self.words or self.targets) and self.star is None and self.hash is None


def _child(node: _Node[T], word: str) -> _Node[T] | None:
    if word == "*":
        return node.star
    if word == "#":
        return node.hash
    return node.words.get(word)


def _split(key: str) -> list[str]:
    return key.split(".") if key else []


class TopicMatcher(_Bindings[T]):
    """Topic exchange: AMQP patterns, in a trie of words with a bounded memo.

    Matching walks the trie once, word by word, keeping the set of active nodes
    (so each ``(node, word)`` state is visited at most once, even for patterns
    like ``#.#.#.#``): its cost depends on the key and on the trie paths that key
    can follow, not on the number of bindings.  Results are memoized per key, up
    to *cache_size* keys (the memo is emptied when full; ``0`` disables it); any
    binding change empties it too.
    """

    __slots__ = ("_root", "_cache", "_cache_size")

    def __init__(self, cache_size: int = TOPIC_CACHE_SIZE) -> None:
        super().__init__()
        self._root: _Node[T] = _Node()
        self._cache: dict[str, tuple[T, ...]] = {}
        self._cache_size = cache_size

    def match(self, key: str) -> Sequence[T]:
        result = self._cache.get(key)
        if result is None:
            result = self._compute(key)
            cache = self._cache
            if len(cache) >= self._cache_size:
                # Dropping everything is cheaper per call than evicting the oldest
                # (a dict scans its deleted front slots), and hot keys come straight back.
                cache.clear()
                if self._cache_size <= 0:
                    return result
            cache[key] = result
        return result

    def _compute(self, key: str) -> tuple[T, ...]:
        # The active nodes, in a dict: an ordered set, so every state is visited once.
        states: dict[_Node[T], None] = {}
        _activate(states, self._root)
        for word in key.split(".") if key else ():
            following: dict[_Node[T], None] = {}
            for node in states:
                # Each node added brings every node it reaches through '#' (zero words).
                child: _Node[T] | None
                if node.is_hash:  # a '#' absorbs this word as well
                    child = node
                    while child is not None and child not in following:
                        following[child] = None
                        child = child.hash
                child = node.words.get(word)
                while child is not None and child not in following:
                    following[child] = None
                    child = child.hash
                child = node.star
                while child is not None and child not in following:
                    following[child] = None
                    child = child.hash
            if not following:
                return ()
            states = following
        found: dict[T, None] = {}
        for node in states:
            if node.targets:
                found.update(node.targets)
        return self._ordered(found)

    def _link(self, pattern: str, target: T) -> None:
        node = self._root
        for word in _split(pattern):
            child = _child(node, word)
            if child is None:
                child = _Node(is_hash=word == "#")
                if word == "*":
                    node.star = child
                elif word == "#":
                    node.hash = child
                else:
                    node.words[word] = child
            node = child
        node.targets[target] = None
        self._cache.clear()

    def _unlink(self, pattern: str, target: T) -> None:
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        for word in _split(pattern):
            child = _child(node, word)
            assert child is not None, "a bound pattern has its trie path"
            path.append((node, word))
            node = child
        del node.targets[target]
        # Prune the nodes that no longer lead to any binding, deepest first.
        while path and node.is_empty():
            parent, word = path.pop()
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
            else:
                del parent.words[word]
            node = parent
        self._cache.clear()


def _activate(states: dict[_Node[T], None], node: _Node[T] | None) -> None:
    """Add *node* to *states* with every node it reaches through ``#`` (zero words)."""
    while node is not None and node not in states:
        states[node] = None
        node = node.hash


def make_matcher(kind: str) -> Matcher[Any]:
    """A new, empty matcher for an exchange of *kind*: direct, fanout or topic."""
    if kind == "direct":
        return DirectMatcher()
    if kind == "fanout":
        return FanoutMatcher()
    if kind == "topic":
        return TopicMatcher()
    raise ValueError(f"unknown exchange kind {kind!r}")
