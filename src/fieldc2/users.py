"""Users, their groups and roles, and the passwords they log in with.

Passwords are hashed with scrypt (memory-hard: N=2^15, r=8, p=1 takes 32 MiB
and ~0.1 s here), from the standard library, so no native dependency is
needed.  Verifying costs that much on purpose: callers on the event loop
run it in a thread (:meth:`UserStore.authenticate_async`).

Users live in ``<data_dir>/users.json`` (0600), rewritten atomically, so the
CLI (``fieldc2 user ...``) and a running server share it: the server reloads
it when it changes.

:class:`FailureLimiter` slows brute force: after a few failures per source
and per user name, further attempts are refused for a delay that doubles up
to a cap, whether or not the password would have been right.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fieldc2.errors import ConfigError

ROLES = ("admin", "operator", "planner", "member")
"""``planner``: may change the incident, solve and publish orders through the
planning API, without the operator's other rights; otherwise a member."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
# scrypt parameters: N=2^15, r=8 -> 128*r*N = 32 MiB per hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
MIN_PASSWORD = 8


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` with base64 salt and hash."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, encoded: str) -> bool:
    """Constant-time check of a password against :func:`hash_password` output."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class User:
    """One person or device account."""

    name: str
    groups: tuple[str, ...]
    role: str = "member"
    password: str = ""
    """The scrypt hash; empty for certificate-only accounts."""
    disabled: bool = False


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a usable user name: 1-64 letters, digits, _ . @ -, "
            "starting with a letter or digit")
    return name


class UserStore:
    """Users in a JSON file shared by the CLI and the server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int] | None = None
        self.reload()

    def reload(self) -> bool:
        """Re-read the file if it changed; True when it did."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            changed = self._stamp is not None
            self._users, self._stamp = {}, None
            return changed
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return False
        try:
            raw = json.loads(self.path.read_text())
            users = {u["name"]: User(name=u["name"], groups=tuple(u["groups"]),
                                     role=u.get("role", "member"), password=u.get("password", ""),
                                     disabled=bool(u.get("disabled", False)))
                     for u in raw["users"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path} is unreadable ({exc}); fix or remove it") from exc
        self._users, self._stamp = users, stamp
        return True

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({"users": [asdict(u) for u in self._users.values()]}, indent=1)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self._stamp = None
        self.reload()

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def all(self) -> list[User]:
        return sorted(self._users.values(), key=lambda u: u.name)

    def add(self, name: str, groups: tuple[str, ...], role: str = "member",
            password: str | None = None) -> User:
        validate_name(name)
        if name in self._users:
            raise ConfigError(f"user {name!r} exists; use `fieldc2 user passwd` or remove it")
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not one of {ROLES}")
        if not groups:
            raise ConfigError("a user needs at least one --group")
        user = User(name=name, groups=groups, role=role,
                    password=self._hash(password) if password else "")
        self._users[name] = user
        self._save()
        return user

    def set_password(self, name: str, password: str) -> None:
        self._users[name] = replace(self._require(name), password=self._hash(password))
        self._save()

    def set_disabled(self, name: str, disabled: bool) -> None:
        self._users[name] = replace(self._require(name), disabled=disabled)
        self._save()

    def _require(self, name: str) -> User:
        user = self._users.get(name)
        if user is None:
            raise ConfigError(f"no user {name!r}; `fieldc2 user list` shows who exists")
        return user

    @staticmethod
    def _hash(password: str) -> str:
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"passwords need at least {MIN_PASSWORD} characters")
        return hash_password(password)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the name and password match and the account is enabled.

        Costs one scrypt even for unknown names, so timing does not reveal
        which names exist.
        """
        user = self._users.get(name)
        encoded = user.password if user is not None and user.password else _dummy_hash()
        ok = check_password(password, encoded)
        if user is None or not user.password or user.disabled or not ok:
            return None
        return user

    async def authenticate_async(self, name: str, password: str) -> User | None:
        """:meth:`authenticate` off the event loop."""
        return await asyncio.to_thread(self.authenticate, name, password)


@functools.cache
def _dummy_hash() -> str:
    """A hash to check unknown names against, so they cost the same time."""
    return hash_password("not a real password", salt=b"fieldc2-dummy-salt")


def limiter_key(kind: str, value: str) -> str:
    """A bounded limiter key: a peer chooses the name, not our memory use.

    The same keys are used by the stream's ``<auth>`` and by enrollment, so a
    guesser gains nothing by alternating between them.
    """
    return f"{kind}:{value[:64]}"


@dataclass
class FailureLimiter:
    """Exponential back-off per key (a source address, a user name).

    ``allowed(key, now)`` says whether an attempt may be tried at all;
    ``failed(key, now)`` records a failure; ``succeeded(key)`` forgets the key.
    Bounded: the oldest keys are forgotten past ``max_keys``.
    """

    free_failures: int = 5
    """Failures allowed before any delay."""
    base_delay: float = 1.0
    """Delay after the first failure past the free ones, seconds; doubles."""
    max_delay: float = 300.0
    max_keys: int = 10_000
    _state: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)

    def allowed(self, key: str, now: float) -> bool:
        state = self._state.get(key)
        return state is None or now >= state[1]

    def failed(self, key: str, now: float) -> None:
        count = self._state.pop(key, (0, 0.0))[0] + 1
        extra = count - self.free_failures
        until = now + min(self.max_delay, self.base_delay * 2 ** (extra - 1)) if extra > 0 else 0.0
        self._state[key] = (count, until)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        state = self._state.get(key)
        return max(0.0, state[1] - now) if state is not None else 0.0

    def succeeded(self, key: str) -> None:
        self._state.pop(key, None)
