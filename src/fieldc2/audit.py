"""Append-only, hash-chained audit log: logins, enrollments, certificates, orders.

One record per JSON line.  A record's ``hash`` is the SHA-256 of its
*canonical encoding*: ``msgspec.json.encode(record, order="sorted")`` with the
``hash`` field left out -- keys sorted (inside ``detail`` too), no whitespace,
UTF-8, floats in shortest round-trip form.  Its ``prev`` is the previous
record's hash (:data:`GENESIS`, 64 zeros, for the first), so editing, deleting,
reordering or inserting a record breaks the chain where it happened.  Each line
must also be byte for byte the record's plain msgspec encoding, so a change
that alters no value (whitespace, an escape, a repeated key) is caught too.

The chain alone cannot show that records were cut off the end or that the
whole file was rewritten with every hash recomputed: ``fieldc2 audit verify``
prints the head hash so an operator can note it elsewhere and compare later.

A sans-I/O core (:func:`seal`, :class:`ChainChecker`) under a thin file shell
(:class:`AuditLog`, :func:`verify`), then the ``fieldc2 audit`` commands.
Everything here raises :class:`AuditError` (under ``FieldC2Error``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import enum
import fcntl
import hashlib
import math
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Annotated, BinaryIO

import msgspec

from fieldc2.config import Config
from fieldc2.errors import FieldC2Error

GENESIS = "0" * 64
"""``prev`` of the first record."""
LOG_NAME = "audit.log"
"""File name of the log in the data directory."""
MAX_RECORD_BYTES = 64 * 1024
"""Longest line, newline included.  A login is ~300 bytes; 64 KiB leaves room
for an order's free text and bounds what the tail reader and :func:`verify`
hold in memory at once."""
SHOW_LIMIT = 10_000
"""Most records ``fieldc2 audit show`` keeps in memory to print."""

_Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class AuditError(FieldC2Error):
    """The audit log cannot be opened, read or written, its last record is
    damaged so nothing can be chained after it, or a record is malformed."""


class AuditRecord(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """One event worth answering for later.  New fields go at the end with
    defaults: ``omit_defaults`` keeps them out of old records' hashes."""

    seq: Annotated[int, msgspec.Meta(ge=1)]
    """Position in the chain, from 1."""
    time: float
    """When it happened, epoch seconds, as given by the caller."""
    kind: str
    """``login``, ``login_failed``, ``enroll``, ``cert_issued``, ``cert_revoked``, ``order``..."""
    actor: str
    """Who did it (user, certificate CN, ``cli``)."""
    subject: str
    """What or whom it was done to."""
    detail: dict[str, str]
    """Anything else, as text."""
    prev: _Hex64
    """Hash of the previous record, :data:`GENESIS` for the first."""
    hash: str = ""
    """SHA-256 of the canonical encoding of every other field, hex.  Its
    default is never written; it exists so the hash input can omit it."""


class Problem(enum.StrEnum):
    """Why a record is not intact."""

    BROKEN_HASH = "broken hash"
    BROKEN_LINK = "broken chain link"
    SEQ_GAP = "seq gap"
    UNPARSEABLE = "unparseable line"
    NOT_CANONICAL = "not canonical"
    TRUNCATED = "truncated last line"


class VerifyResult(msgspec.Struct, frozen=True):
    """What :func:`verify` found."""

    records: int
    """Records found intact, from the start."""
    head: str = GENESIS
    """Hash of the last intact record."""
    bad_seq: int | None = None
    """Chain position (= line number) of the first record not intact."""
    problem: Problem | None = None
    """What is wrong with it; ``None`` when the whole log is intact."""
    why: str = ""
    """The details, for a person."""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.problem is None:
            return f"{self.records} records intact; head {self.head}"
        return (f"record {self.bad_seq} (line {self.bad_seq}): {self.problem}: {self.why}; "
                f"the {self.records} records before it are intact, nothing from it on can "
                "be trusted")


class _Damage(Exception):
    def __init__(self, problem: Problem, why: str) -> None:
        super().__init__(f"{problem}: {why}")
        self.problem, self.why = problem, why


# -- sans-I/O core ---------------------------------------------------------------------------


def record_hash(record: AuditRecord) -> str:
    """Hex SHA-256 of the canonical encoding of ``record`` without its hash."""
    body = msgspec.json.encode(msgspec.structs.replace(record, hash=""), order="sorted")
    return hashlib.sha256(body).hexdigest()


def encode_record(record: AuditRecord) -> bytes:
    """The record's line, without the newline."""
    return msgspec.json.encode(record)


def seal(last: AuditRecord | None, kind: str, actor: str, subject: str, now: float,
         detail: Mapping[str, str]) -> AuditRecord:
    """The record that follows ``last`` (``None``: the first), hash included."""
    if not math.isfinite(now):
        raise AuditError(f"audit time must be finite, not {now!r}")
    texts = (kind, actor, subject, *detail.keys(), *detail.values())
    if not all(isinstance(text, str) for text in texts):
        raise AuditError("audit kind, actor, subject and detail must be text")
    unsealed = AuditRecord(
        seq=1 if last is None else last.seq + 1, time=float(now), kind=kind, actor=actor,
        subject=subject, detail=dict(detail), prev=GENESIS if last is None else last.hash)
    try:
        record = msgspec.structs.replace(unsealed, hash=record_hash(unsealed))
        size = len(encode_record(record))
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a mis-decoded name
        raise AuditError(f"audit record is not valid Unicode text: {exc}") from exc
    if size >= MAX_RECORD_BYTES:
        raise AuditError(f"audit record larger than {MAX_RECORD_BYTES} bytes")
    return record


def _decode(chunk: bytes) -> AuditRecord:
    """A self-consistent record from one line (newline included), or :class:`_Damage`."""
    if not chunk.endswith(b"\n"):
        if len(chunk) >= MAX_RECORD_BYTES:
            raise _Damage(Problem.UNPARSEABLE, f"longer than {MAX_RECORD_BYTES} bytes")
        raise _Damage(Problem.TRUNCATED, "the file ends inside this record")
    line = chunk[:-1]
    try:
        record = msgspec.json.decode(line, type=AuditRecord)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _Damage(Problem.UNPARSEABLE, str(exc)) from None
    if encode_record(record) != line:
        raise _Damage(Problem.NOT_CANONICAL, "the line is not the encoding of its own values")
    if record.hash != record_hash(record):
        raise _Damage(Problem.BROKEN_HASH, "the hash does not match the record's contents")
    return record


class ChainChecker:
    """Checks lines in order, holding only the last good record's hash."""

    def __init__(self) -> None:
        self.records = 0
        self.head = GENESIS
        self.damage: _Damage | None = None

    def feed(self, chunk: bytes) -> bool:
        """Check the next line, newline included (absent: the file ended inside
        it).  False once the chain is broken; later lines are not looked at."""
        if self.damage is not None:
            return False
        try:
            record = _decode(chunk)
            if record.seq != self.records + 1:
                raise _Damage(Problem.SEQ_GAP, f"expected seq {self.records + 1}, "
                                               f"found {record.seq}")
            if record.prev != self.head:
                raise _Damage(Problem.BROKEN_LINK, "prev is not the previous record's hash")
        except _Damage as damage:
            self.damage = damage
            return False
        self.records, self.head = record.seq, record.hash
        return True

    def result(self) -> VerifyResult:
        if self.damage is None:
            return VerifyResult(self.records, self.head)
        return VerifyResult(self.records, self.head, self.records + 1, self.damage.problem,
                            self.damage.why)


# -- file shell ------------------------------------------------------------------------------


class _Flock:
    def __init__(self, fd: int, how: int) -> None:
        self.fd, self.how = fd, how

    def __enter__(self) -> None:
        fcntl.flock(self.fd, self.how)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def _read_tail(fd: int, size: int, path: Path) -> AuditRecord | None:
    """The last record of a file of ``size`` bytes; the caller holds a lock."""
    if size == 0:
        return None
    start = max(0, size - MAX_RECORD_BYTES - 1)  # one more byte: the newline before it
    data = os.pread(fd, size - start, start)
    cut = data.rfind(b"\n", 0, len(data) - 1)
    try:
        if cut < 0 and start > 0:
            raise _Damage(Problem.UNPARSEABLE, f"longer than {MAX_RECORD_BYTES} bytes")
        return _decode(data[cut + 1:])
    except _Damage as damage:
        raise AuditError(f"the last record of audit log {path} is damaged ({damage}); "
                         "nothing can be chained after it: run `fieldc2 audit verify` "
                         "and move the file aside") from None


def _write_durably(fd: int, line: bytes, size: int) -> None:
    """Append ``line`` to a file of ``size`` bytes and fsync; on failure cut
    the file back so that no half record is left behind."""
    try:
        done = 0
        while done < len(line):
            done += os.write(fd, line[done:])
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def _open_log(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
        parent = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(parent)  # the new name is on disk, not just its contents
        finally:
            os.close(parent)
    except OSError:
        os.close(fd)
        raise
    return fd


class AuditLog:
    """An open audit log: append records, each on disk before ``append`` returns.

    Appends lock the file (``flock``) around reading the tail and writing, so
    the server and a CLI command can share it.  Not thread-safe.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = _open_log(path)
        except OSError as exc:
            raise AuditError(f"cannot open audit log {path}: {exc}") from exc
        try:
            with _Flock(self._fd, fcntl.LOCK_SH):
                self._size = os.fstat(self._fd).st_size
                self._last = _read_tail(self._fd, self._size, path)
        except OSError as exc:
            self.close()
            raise AuditError(f"cannot read audit log {path}: {exc}") from exc
        except AuditError:
            self.close()
            raise

    @property
    def last(self) -> AuditRecord | None:
        """The last record this log wrote or read (others may have appended since)."""
        return self._last

    def append(self, kind: str, actor: str, subject: str, now: float, /,
               **detail: str) -> AuditRecord:
        """Seal and write the next record; it is fsynced when this returns."""
        if self._fd is None:
            raise AuditError(f"audit log {self.path} is closed")
        fd = self._fd
        try:
            with _Flock(fd, fcntl.LOCK_EX):
                size = os.fstat(fd).st_size
                if size != self._size:  # another process appended
                    self._last = _read_tail(fd, size, self.path)
                record = seal(self._last, kind, actor, subject, now, detail)
                line = encode_record(record) + b"\n"
                _write_durably(fd, line, size)
        except OSError as exc:
            raise AuditError(f"cannot append to audit log {self.path}: {exc}") from exc
        self._last, self._size = record, size + len(line)
        return record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _lines(file: BinaryIO) -> Iterator[bytes]:
    """Lines as they stood when no append was under way (appends hold the
    exclusive lock until fsynced), each at most :data:`MAX_RECORD_BYTES`."""
    with _Flock(file.fileno(), fcntl.LOCK_SH):
        remaining = os.fstat(file.fileno()).st_size
    while remaining > 0:
        chunk = file.readline(min(MAX_RECORD_BYTES, remaining))
        remaining -= len(chunk)
        yield chunk


def _open_for_reading(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise AuditError(f"cannot read audit log {path}: {exc}") from exc


def verify(path: Path) -> VerifyResult:
    """Check the whole chain, streaming; stops at the first record not intact."""
    checker = ChainChecker()
    with _open_for_reading(path) as file:
        try:
            for chunk in _lines(file):
                if not checker.feed(chunk):
                    break
        except OSError as exc:
            raise AuditError(f"cannot read audit log {path}: {exc}") from exc
    return checker.result()


def recent(path: Path, count: int) -> list[tuple[int, AuditRecord | None]]:
    """The last ``count`` lines as ``(line number, record)``, ``None`` where a
    line does not parse, at most :data:`SHOW_LIMIT`.  Not verified: that is
    :func:`verify`'s job."""
    kept: collections.deque[tuple[int, AuditRecord | None]] = collections.deque(
        maxlen=max(0, min(count, SHOW_LIMIT)))
    with _open_for_reading(path) as file:
        try:
            for number, chunk in enumerate(_lines(file), 1):
                try:
                    kept.append((number, msgspec.json.decode(chunk, type=AuditRecord)))
                except (msgspec.DecodeError, UnicodeDecodeError):
                    kept.append((number, None))
        except OSError as exc:
            raise AuditError(f"cannot read audit log {path}: {exc}") from exc
    return list(kept)


# -- fieldc2 audit ---------------------------------------------------------------------------


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= SHOW_LIMIT:
        raise argparse.ArgumentTypeError(f"expected 1 to {SHOW_LIMIT}, not {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fieldc2 audit verify|show``."""
    audit = sub.add_parser("audit", help="the tamper-evident audit log",
                           description="Check or show the hash-chained audit log of logins, "
                                       "enrollments and certificates (<data_dir>/audit.log).")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    check = actions.add_parser("verify", help="check the chain; exit 1 if it was tampered with",
                               description="Check every record's hash and chain link. Exit 0 "
                                           "when intact, 1 naming the first bad record.")
    show = actions.add_parser("show", help="print the latest records (not verified)",
                              description="Print the latest records. This does not verify "
                                          "them: use `fieldc2 audit verify`.")
    show.add_argument("--last", type=_count, default=20, metavar="N",
                      help=f"how many records (default 20, at most {SHOW_LIMIT})")
    for one in (check, show):
        one.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration")
        one.add_argument("--data-dir", type=Path, metavar="DIR",
                         help="where the log lives (default ./fieldc2-data)")


def _printable(text: str) -> str:
    """Escape control characters: names come from certificates and clients."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _when(time: float) -> str:
    try:
        return dt.datetime.fromtimestamp(time, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return repr(time)


def _format(record: AuditRecord) -> str:
    detail = " ".join(f"{k}={v}" for k, v in sorted(record.detail.items()))
    return _printable(f"{record.seq:>6} {_when(record.time)} {record.kind:<13} {record.actor} "
                      f"-> {record.subject} {detail}".rstrip())


def run(args: argparse.Namespace, config: Config) -> int:
    """Run ``fieldc2 audit ...``: 0 when intact, 1 when the log was tampered with."""
    path = config.data_dir / LOG_NAME
    if args.audit_command == "show":
        for number, record in recent(path, args.last):
            print(_format(record) if record is not None else f"{'?':>6} line {number} "
                  "does not parse")
        return 0
    result = verify(path)
    if result.ok:
        print(f"audit log {path}: {result.describe()}")
        return 0
    print(f"fieldc2: audit log {path} was tampered with or damaged: {result.describe()}",
          file=sys.stderr)
    return 1
