"""The audit log: every kind of tampering shows, and processes can share it."""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldc2.audit import (
    GENESIS,
    MAX_RECORD_BYTES,
    AuditError,
    AuditLog,
    AuditRecord,
    ChainChecker,
    Problem,
    add_parser,
    encode_record,
    record_hash,
    run,
    seal,
    verify,
)
from fieldc2.config import Config

T0 = 1_700_000_000.0


def write_log(path: Path, count: int) -> list[AuditRecord]:
    with AuditLog(path) as log:
        return [log.append("login", f"user{i}", "server", T0 + i, via="tls", n=str(i))
                for i in range(count)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def resealed(line: bytes, **changes: object) -> bytes:
    """The line with fields changed and a hash that matches them again."""
    record = msgspec.structs.replace(msgspec.json.decode(line, type=AuditRecord), **changes)
    return encode_record(msgspec.structs.replace(record, hash=record_hash(record))) + b"\n"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


def test_a_long_chain_verifies(log_path: Path) -> None:
    records = write_log(log_path, 300)
    assert [r.seq for r in records] == list(range(1, 301))
    assert records[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(records))
    result = verify(log_path)
    assert result.ok, result.describe()
    assert (result.records, result.head, result.bad_seq) == (300, records[-1].hash, None)
    assert len(lines(log_path)) == 300


def test_a_record_holds_what_was_asked(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        record = log.append("cert_issued", "cli", "CN=alpha", 12.5, kind="client", days="365")
    assert (record.kind, record.actor, record.subject, record.time) == (
        "cert_issued", "cli", "CN=alpha", 12.5)
    assert record.detail == {"kind": "client", "days": "365"}
    assert msgspec.json.decode(lines(log_path)[0], type=AuditRecord) == record


def test_an_empty_log_is_intact(log_path: Path) -> None:
    AuditLog(log_path).close()
    assert log_path.read_bytes() == b""
    assert verify(log_path).ok and verify(log_path).records == 0


def _edit_actor(rows: list[bytes]) -> None:
    rows[4] = rows[4].replace(b'"user4"', b'"user9"')


def _edit_actor_and_rehash(rows: list[bytes]) -> None:
    rows[4] = resealed(rows[4], actor="mallory")


def _edit_hash(rows: list[bytes]) -> None:
    record = msgspec.json.decode(rows[4], type=AuditRecord)
    rows[4] = rows[4].replace(record.hash.encode(), ("f" * 64).encode())


def _delete(rows: list[bytes]) -> None:
    del rows[4]


def _delete_and_renumber(rows: list[bytes]) -> None:
    del rows[4]
    rows[4:] = [resealed(row, seq=seq) for seq, row in enumerate(rows[4:], 5)]


def _swap(rows: list[bytes]) -> None:
    rows[4], rows[5] = rows[5], rows[4]


def _insert_forged(rows: list[bytes]) -> None:
    rows.insert(4, resealed(rows[4], actor="mallory"))  # seq, prev and hash all fit


def _insert_garbage(rows: list[bytes]) -> None:
    rows.insert(4, b"not json\n")


def _duplicate(rows: list[bytes]) -> None:
    rows.insert(4, rows[4])


def _add_whitespace(rows: list[bytes]) -> None:
    rows[4] = rows[4].replace(b'"seq":5,', b'"seq": 5,')


def _blank_line(rows: list[bytes]) -> None:
    rows.insert(4, b"\n")


def _truncate(rows: list[bytes]) -> None:
    rows[-1] = rows[-1][:-20]


def _drop_final_newline(rows: list[bytes]) -> None:
    rows[-1] = rows[-1][:-1]


@pytest.mark.parametrize(("tamper", "problem", "seq"), [
    (_edit_actor, Problem.BROKEN_HASH, 5),
    (_edit_actor_and_rehash, Problem.BROKEN_LINK, 6),
    (_edit_hash, Problem.BROKEN_HASH, 5),
    (_delete, Problem.SEQ_GAP, 5),
    (_delete_and_renumber, Problem.BROKEN_LINK, 5),
    (_swap, Problem.SEQ_GAP, 5),
    (_insert_forged, Problem.SEQ_GAP, 6),
    (_insert_garbage, Problem.UNPARSEABLE, 5),
    (_duplicate, Problem.SEQ_GAP, 6),
    (_add_whitespace, Problem.NOT_CANONICAL, 5),
    (_blank_line, Problem.UNPARSEABLE, 5),
    (_truncate, Problem.TRUNCATED, 10),
    (_drop_final_newline, Problem.TRUNCATED, 10),
])
def test_tampering_names_the_first_bad_record(
        log_path: Path, tamper: Callable[[list[bytes]], None], problem: Problem,
        seq: int) -> None:
    write_log(log_path, 10)
    rows = lines(log_path)
    tamper(rows)
    log_path.write_bytes(b"".join(rows))
    result = verify(log_path)
    assert (result.ok, result.problem, result.bad_seq) == (False, problem, seq), result
    assert result.records == seq - 1
    assert f"record {seq} " in result.describe()


def test_an_oversized_line_is_unparseable_and_bounded(log_path: Path) -> None:
    write_log(log_path, 2)
    with log_path.open("ab") as file:
        file.write(b"x" * (3 * MAX_RECORD_BYTES) + b"\n")
    result = verify(log_path)
    assert (result.problem, result.bad_seq) == (Problem.UNPARSEABLE, 3)
    with pytest.raises(AuditError, match="damaged"):
        AuditLog(log_path)


def test_a_restart_continues_the_chain(log_path: Path) -> None:
    first = write_log(log_path, 5)
    with AuditLog(log_path) as log:
        assert log.last == first[-1]
        sixth = log.append("enroll", "alpha", "device-1", T0 + 100)
    assert (sixth.seq, sixth.prev) == (6, first[-1].hash)
    assert verify(log_path).records == 6


def test_two_open_logs_in_one_process_keep_one_chain(log_path: Path) -> None:
    with AuditLog(log_path) as a, AuditLog(log_path) as b:
        for i in range(10):
            (a if i % 3 else b).append("login", "x", str(i), T0 + i)
    result = verify(log_path)
    assert result.ok and result.records == 10


@pytest.mark.parametrize("umask", [0o022, 0o277, 0o000])
def test_the_file_is_created_0600(log_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        AuditLog(log_path).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600


def _append_many(path: str, worker: int, count: int, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    with AuditLog(Path(path)) as log:
        for i in range(count):
            log.append("login", f"worker{worker}", str(i), T0 + i)


def test_processes_appending_at_once_keep_a_valid_chain(log_path: Path) -> None:
    workers, count = 4, 100
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    procs = [context.Process(target=_append_many, args=(str(log_path), w, count, start))
             for w in range(workers)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    result = verify(log_path)
    assert result.ok, result.describe()
    assert result.records == workers * count
    records = [msgspec.json.decode(row, type=AuditRecord) for row in lines(log_path)]
    for w in range(workers):
        mine = [r.subject for r in records if r.actor == f"worker{w}"]
        assert mine == [str(i) for i in range(count)]


def test_a_damaged_tail_refuses_appends(log_path: Path) -> None:
    write_log(log_path, 3)
    log_path.write_bytes(log_path.read_bytes()[:-7])
    with pytest.raises(AuditError, match=r"last record .* damaged .*truncated"):
        AuditLog(log_path)
    rows = lines(log_path)[:2]
    log_path.write_bytes(b"".join(rows[:1]) + rows[1].replace(b'"user1"', b'"userX"'))
    with pytest.raises(AuditError, match="broken hash"):
        AuditLog(log_path)


def test_unreadable_logs_raise_audit_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="cannot read"):
        verify(tmp_path / "absent.log")
    with pytest.raises(AuditError, match="cannot read"):
        verify(tmp_path)  # a directory
    with pytest.raises(AuditError, match="cannot open"):
        AuditLog(tmp_path / "no-such-dir" / "audit.log")
    with pytest.raises(AuditError, match="cannot open"):
        AuditLog(tmp_path)


@pytest.mark.parametrize(("now", "detail"), [
    (float("nan"), {}),
    (float("inf"), {}),
    (T0, {"n": 3}),
    (T0, {"big": "x" * MAX_RECORD_BYTES}),
    (T0, {"name": "\ud800"}),
])
def test_bad_appends_are_refused_and_leave_the_log_intact(
        log_path: Path, now: float, detail: dict[str, object]) -> None:
    write_log(log_path, 2)
    before = log_path.read_bytes()
    with AuditLog(log_path) as log, pytest.raises(AuditError):
        log.append("login", "a", "b", now, **detail)  # type: ignore[arg-type]
    assert log_path.read_bytes() == before


def test_a_closed_log_refuses_appends(log_path: Path) -> None:
    log = AuditLog(log_path)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append("login", "a", "b", T0)


def test_the_checker_stops_at_the_first_break() -> None:
    first = seal(None, "login", "a", "b", T0, {})
    second = seal(first, "login", "a", "c", T0, {})
    checker = ChainChecker()
    assert checker.feed(encode_record(second) + b"\n") is False
    assert checker.feed(encode_record(first) + b"\n") is False
    assert (checker.result().bad_seq, checker.result().problem) == (1, Problem.SEQ_GAP)


# -- property: any byte edit shows ----------------------------------------------------------

texts = st.text(max_size=20)
entries = st.tuples(st.sampled_from(["login", "login_failed", "enroll", "cert_revoked"]),
                    texts, texts, st.floats(0, 4e9, allow_nan=False),
                    st.dictionaries(texts, texts, max_size=3))


def sealed_bytes(specs: list[tuple[str, str, str, float, dict[str, str]]]) -> bytes:
    out, last = [], None
    for kind, actor, subject, now, detail in specs:
        last = seal(last, kind, actor, subject, now, detail)
        out.append(encode_record(last) + b"\n")
    return b"".join(out)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "audit.log"


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(entries, min_size=1, max_size=6), data=st.data())
def test_any_valid_chain_verifies_and_any_byte_edit_is_caught(
        scratch: Path, specs: list[tuple[str, str, str, float, dict[str, str]]],
        data: st.DataObject) -> None:
    original = sealed_bytes(specs)
    scratch.write_bytes(original)
    assert verify(scratch).records == len(specs)
    edited = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        at = data.draw(st.integers(0, len(edited) - 1), label="at")
        action = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="action")
        byte = data.draw(st.integers(0, 255), label="byte")
        if action == "replace":
            edited[at] = byte
        elif action == "insert":
            edited.insert(at, byte)
        elif len(edited) > 1:
            del edited[at]
    scratch.write_bytes(bytes(edited))
    result = verify(scratch)
    assert result.ok == (bytes(edited) == original), (bytes(edited), result)


# -- fieldc2 audit ---------------------------------------------------------------------------


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fieldc2")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_verify_passes_then_names_the_tampered_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = Config(data_dir=tmp_path)
    write_log(tmp_path / "audit.log", 4)
    args = cli(["audit", "verify", "--data-dir", str(tmp_path)])
    assert args.data_dir == tmp_path
    assert run(args, config) == 0
    assert "4 records intact" in capsys.readouterr().out
    rows = lines(tmp_path / "audit.log")
    rows[2] = rows[2].replace(b'"server"', b'"elsewhere"')
    (tmp_path / "audit.log").write_bytes(b"".join(rows))
    assert run(args, config) == 1
    err = capsys.readouterr().err
    assert "record 3 (line 3): broken hash" in err


def test_cli_show_prints_the_last_records_safely(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditLog(tmp_path / "audit.log") as log:
        for i in range(5):
            log.append("login", f"u{i}", "server", T0 + i)
        log.append("login_failed", "evil\x1b[2J", "server", T0 + 9, reason="bad cert")
    with (tmp_path / "audit.log").open("ab") as file:
        file.write(b"garbage\n")
    assert run(cli(["audit", "show", "--last", "3"]), Config(data_dir=tmp_path)) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert out[0].split()[:2] == ["5", "2023-11-14"]
    assert "\x1b" not in out[1] and "evil\\x1b[2J -> server reason=bad cert" in out[1]
    assert "line 7 does not parse" in out[2]


@pytest.mark.parametrize("last", ["0", "-1", "x", "10001"])
def test_cli_show_bounds_last(last: str) -> None:
    with pytest.raises(SystemExit):
        cli(["audit", "show", "--last", last])
