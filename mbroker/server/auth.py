"""Users, passwords and permissions: the users file, argon2id hashes, name patterns.

No Twisted here: the protocol runs :meth:`Authenticator.check` in a thread (argon2
is slow on purpose) and asks :class:`Permissions` before each command.

The users file
    One user per line, five or six fields separated by colons::

        # user:hash:configure:write:read[:tags]
        alice:$argon2id$v=19$m=65536,t=3,p=4$…$…:alice.*:*:alice.*|jobs
        ops:$argon2id$v=19$m=65536,t=3,p=4$…$…:-:-:-:administrator

    ``hash`` is an argon2id hash in its PHC string form (what ``mbroker user add``
    writes; argon2-cffi makes and checks it, and checks in constant time).  The
    three last fields are :class:`Pattern` texts, as in RabbitMQ: *configure* names
    may be created, deleted, bound and unbound; *write* names may be published to;
    *read* names may be consumed from (SUBSCRIBE, PULL, PURGE) and bound to.
    The optional sixth field holds the user's *tags*, comma-separated (``-`` or
    nothing for none), as RabbitMQ's management plugin has them; they matter to the
    HTTP API only (see :class:`User`): ``monitoring`` may read every figure,
    ``administrator`` may also do everything, whatever the patterns say.  An unknown
    tag makes the file invalid (a misspelt tag would silently grant nothing).  A file
    of five-field lines (from before tags) is read as users without tags.
    Blank lines and lines starting with ``#`` are ignored.  User names are 1-64
    characters of ``A-Z a-z 0-9 _ - . @``.

Patterns
    A pattern is alternatives separated by ``|``; each is a glob over object names:
    ``*`` matches any run of name characters (the empty one too), every other
    character stands for itself.  So ``*`` matches every name, ``jobs|logs`` two,
    ``alice.*`` every name that begins with ``alice.``, and the empty pattern
    (``-`` may be written for it) nothing.  A pattern may only hold name characters
    (``A-Z a-z 0-9 _ - .``), ``*`` and ``|``: regular-expression syntax is refused
    when the file is read, never compiled.  Matching is a few ``str.find`` calls per
    alternative, linear in the length of the name: no backtracking to blow up.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable, Iterator

import attrs
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mbroker.config import NAME_MAX

__all__ = [
    "ADMINISTRATOR",
    "ANYTHING",
    "Authenticator",
    "MONITORING",
    "NOTHING",
    "Pattern",
    "Permissions",
    "TAGS",
    "User",
    "Users",
    "UsersFileError",
    "format_tags",
    "hash_password",
    "parse_tags",
    "valid_user_name",
]

USER_MAX = 64
_USER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.@")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
#: the most alternatives, and the longest one, a pattern may have
MAX_ALTERNATIVES = 64
MAX_ALTERNATIVE = NAME_MAX

#: the tag that lets a user read every figure over HTTP
MONITORING = "monitoring"
#: the tag that lets a user read and do everything over HTTP
ADMINISTRATOR = "administrator"
#: the tags a users file may give
TAGS = (MONITORING, ADMINISTRATOR)


class UsersFileError(ValueError):
    """The users file (or a pattern, a user name) is not valid."""


def valid_user_name(name: str) -> bool:
    return 0 < len(name) <= USER_MAX and all(c in _USER_CHARS for c in name)


# --------------------------------------------------------------------- patterns


class _Glob:
    """One alternative: literal parts between the stars, matched left to right."""

    __slots__ = ("parts", "star")

    def __init__(self, text: str) -> None:
        self.parts = text.split("*")
        self.star = len(self.parts) > 1

    def matches(self, name: str) -> bool:
        parts = self.parts
        if not self.star:
            return name == parts[0]
        first, last = parts[0], parts[-1]
        if len(name) < len(first) + len(last):
            return False
        if not name.startswith(first) or not name.endswith(last):
            return False
        # The middle parts, each at its leftmost place after the previous one: for
        # globs with only '*', the leftmost choice never loses a match.
        pos, end = len(first), len(name) - len(last)
        for part in parts[1:-1]:
            if not part:
                continue
            found = name.find(part, pos, end)
            if found < 0:
                return False
            pos = found + len(part)
        return True


@attrs.frozen(eq=True)
class Pattern:
    """A permission pattern (see the module's docstring); ``Pattern("")`` matches nothing."""

    text: str
    _globs: tuple[_Glob, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        text = self.text
        if text == "-":
            object.__setattr__(self, "text", "")
            text = ""
        globs: list[_Glob] = []
        if text:
            alternatives = text.split("|")
            if len(alternatives) > MAX_ALTERNATIVES:
                raise UsersFileError(f"more than {MAX_ALTERNATIVES} alternatives in {text!r}")
            for alt in alternatives:
                if not alt or len(alt) > MAX_ALTERNATIVE:
                    raise UsersFileError(
                        f"empty or over-long alternative in pattern {text!r}"
                        f" (1-{MAX_ALTERNATIVE} characters each)"
                    )
                bad = sorted({c for c in alt if c != "*" and c not in _NAME_CHARS})
                if bad:
                    raise UsersFileError(
                        f"pattern {text!r} holds {''.join(bad)!r}: only name characters"
                        " (A-Z a-z 0-9 _ - .), '*' and '|' are allowed"
                    )
                globs.append(_Glob(alt))
        object.__setattr__(self, "_globs", tuple(globs))

    def matches(self, name: str) -> bool:
        return any(g.matches(name) for g in self._globs)

    def __str__(self) -> str:
        return self.text or "-"


ANYTHING = Pattern("*")
NOTHING = Pattern("")


@attrs.frozen
class Permissions:
    """What a user may do, as in RabbitMQ: configure, write and read patterns."""

    configure: Pattern = ANYTHING
    write: Pattern = ANYTHING
    read: Pattern = ANYTHING

    def may_configure(self, name: str) -> bool:
        return self.configure.matches(name)

    def may_write(self, name: str) -> bool:
        return self.write.matches(name)

    def may_read(self, name: str) -> bool:
        return self.read.matches(name)

    def may_see(self, name: str) -> bool:
        """Any right on the name: LIST shows it, STATS tells about it."""
        return self.may_configure(name) or self.may_write(name) or self.may_read(name)

    def may_see_broker(self) -> bool:
        """Some right on some name: STATS without a name tells the broker's figures
        (connections, memory) only to such a user."""
        return bool(self.configure.text or self.write.text or self.read.text)


def parse_tags(text: str) -> frozenset[str]:
    """The tags of a users file's sixth field (or ``--tags``): comma-separated names
    of :data:`TAGS`; ``""`` or ``-`` for none.  Raises :class:`UsersFileError`."""
    text = text.strip()
    if text in ("", "-"):
        return frozenset()
    tags = [t.strip() for t in text.split(",")]
    for tag in tags:
        if tag not in TAGS:
            raise UsersFileError(
                f"unknown tag {tag!r} in {text!r}: tags are {', '.join(TAGS)}"
                " (comma-separated, '-' for none)"
            )
    return frozenset(tags)


def format_tags(tags: frozenset[str]) -> str:
    """``tags`` as the users file writes them: in :data:`TAGS` order, ``-`` for none."""
    return ",".join(t for t in TAGS if t in tags) or "-"


@attrs.frozen
class User:
    """A user of the users file.

    ``tags`` matter to the HTTP API only (the native protocol applies the patterns
    alone): :meth:`may_monitor` users read every figure there, :meth:`may_administer`
    users also take every action; a user without tags gets what its patterns allow.
    """

    name: str
    hash: str = attrs.field(repr=False)
    permissions: Permissions = Permissions()
    tags: frozenset[str] = frozenset()

    def may_monitor(self) -> bool:
        """Tagged ``monitoring`` or ``administrator``: every figure over HTTP."""
        return MONITORING in self.tags or ADMINISTRATOR in self.tags

    def may_administer(self) -> bool:
        """Tagged ``administrator``: every figure and every action over HTTP."""
        return ADMINISTRATOR in self.tags


# ------------------------------------------------------------------- the file


def hash_password(password: str, hasher: PasswordHasher | None = None) -> str:
    """An argon2id hash of ``password`` (argon2-cffi's default, RFC 9106 parameters)."""
    if not password:
        raise UsersFileError("the password is empty")
    return (hasher or PasswordHasher()).hash(password)


def _format(user: User) -> str:
    p = user.permissions
    line = f"{user.name}:{user.hash}:{p.configure}:{p.write}:{p.read}"
    return f"{line}:{format_tags(user.tags)}" if user.tags else line


def _parse_line(line: str, where: str) -> User:
    fields = line.split(":")
    if len(fields) not in (5, 6):
        raise UsersFileError(f"{where}: expected user:hash:configure:write:read[:tags]")
    name, hashed, configure, write, read = fields[:5]
    if not valid_user_name(name):
        raise UsersFileError(
            f"{where}: bad user name {name!r} (1-{USER_MAX} of A-Z a-z 0-9 _ - . @)"
        )
    if not hashed.startswith("$argon2"):
        raise UsersFileError(f"{where}: the hash of {name} is not an argon2 hash")
    try:
        extract_parameters(hashed)
    except InvalidHashError:
        raise UsersFileError(f"{where}: the hash of {name} is not a valid argon2 hash") from None
    try:
        permissions = Permissions(Pattern(configure), Pattern(write), Pattern(read))
        tags = parse_tags(fields[5]) if len(fields) == 6 else frozenset()
    except UsersFileError as e:
        raise UsersFileError(f"{where}: {e}") from None
    return User(name, hashed, permissions, tags)


@attrs.frozen
class Users:
    """The users of a users file, by name."""

    by_name: dict[str, User] = attrs.field(factory=dict)

    def __iter__(self) -> Iterator[User]:
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str) -> User | None:
        return self.by_name.get(name)

    def with_user(self, user: User) -> Users:
        return Users({**self.by_name, user.name: user})

    def without(self, name: str) -> Users:
        return Users({k: v for k, v in self.by_name.items() if k != name})

    @classmethod
    def parse(cls, text: str, source: str = "users file") -> Users:
        users: dict[str, User] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user = _parse_line(line, f"{source} line {n}")
            if user.name in users:
                raise UsersFileError(f"{source} line {n}: user {user.name} again")
            users[user.name] = user
        return cls(users)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Users:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsersFileError(f"cannot read the users file {os.fspath(path)}: {e}") from None
        return cls.parse(text, os.fspath(path))

    def dumps(self) -> str:
        lines = [
            "# mbroker users: user:argon2id-hash:configure:write:read[:tags]"
            " (see docs/security.rst)"
        ]
        lines += [_format(u) for u in sorted(self, key=lambda u: u.name)]
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temporary file in the same directory (mode 0600),
        fsync'd, renamed over ``path``, and the directory fsync'd."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".users-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.dumps())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        try:
            dfd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)


# ---------------------------------------------------------------- checking


class Authenticator:
    """Checks passwords against a users file, re-read when it changes.

    :meth:`check` and :meth:`refresh` block (file I/O and argon2, tens of
    milliseconds): call them from a thread.  They are thread-safe.  A user unknown to
    the file costs one argon2 verification all the same, against a stand-in hash made
    (when the file is read) with the parameters of the file's first hash, so that
    timing does not tell which user names exist.
    """

    def __init__(self, path: str | os.PathLike[str], users: Users | None = None) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._hasher = PasswordHasher()
        if users is None:
            self._stamp = self._file_stamp()
            users = Users.load(self.path)
        self._dummy = self._dummy_hash(users)
        self.users = users

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> str | None:
        """Re-read the file if it changed.  Returns why it could not be (the users
        known before stay), or None."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return None
            try:
                users = Users.load(self.path)
            except UsersFileError as e:
                self._stamp = stamp  # said once per change, not at every AUTH
                return str(e)
            self._stamp = stamp
            dummy = self._dummy_hash(users)
            self.users, self._dummy = users, dummy
            return None

    def _dummy_hash(self, users: Users) -> str:
        first = next(iter(users), None)
        hasher = self._hasher
        if first is not None:
            hasher = PasswordHasher.from_parameters(extract_parameters(first.hash))
        return hasher.hash("not a password of anybody's")

    def check(self, name: str, password: str) -> User | None:
        """The user, if ``password`` is theirs; None otherwise."""
        users, dummy = self.users, self._dummy
        user = users.get(name)
        hashed = user.hash if user is not None else dummy
        try:
            self._hasher.verify(hashed, password.encode("utf-8", "surrogateescape"))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user


def parse_patterns(texts: Iterable[str]) -> Permissions:
    """``Permissions`` from three pattern texts (configure, write, read)."""
    configure, write, read = (Pattern(t) for t in texts)
    return Permissions(configure, write, read)
