"""Reading vtc's own append-only JSONL files (a store's index, an evaluation's answer journal) and the
flock that gives one directory one writer.

A line may be torn (a run killed mid-append), damaged (bytes that are not UTF-8), or foreign (valid JSON
that vtc did not write, or that lacks a field). None of them may stop a run or count as done: each is
skipped, and one warning per file names the file and the first bad line's number.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from vtc.errors import VtcError, warn


def read_jsonl(path: str | Path, check: Callable[[dict], str | None]) -> list[dict]:
    """The records of ``path`` that parse and pass ``check`` (which returns why a record is unusable, or
    None), in file order; a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, "rb") as f:
        return parse_jsonl(f, check, str(path))


def parse_jsonl(
    lines: Iterable[bytes], check: Callable[[dict], str | None], name: str, first_line: int = 1
) -> list[dict]:
    """The records among raw JSONL ``lines`` that parse and pass ``check``, in order; one warning names
    ``name`` and the first bad line's number (the first of ``lines`` being number ``first_line``)."""
    records, bad = [], []
    for n, raw in enumerate(lines, first_line):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append((n, "not UTF-8"))
            continue
        except json.JSONDecodeError:
            bad.append((n, "not JSON (torn or foreign)"))
            continue
        why = check(rec) if isinstance(rec, dict) else "not a JSON object"
        if why:
            bad.append((n, why))
        else:
            records.append(rec)
    if bad:
        n, why = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        warn(f"{name}: skipped line {n}: {why}{more}")
    return records


def read_json(path: str | Path) -> dict | None:
    """A JSON object file of ours (run.json, adapter.json, state.json), or None where it is missing,
    torn, not UTF-8 or not an object: the caller says what that means and what to do."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def append_jsonl(path: str | Path, rec: dict) -> None:
    """Append one record as a line and fsync it; the line is complete on disk before this returns."""
    append_line(path, (json.dumps(rec, sort_keys=True, default=str) + "\n").encode("utf-8"))


def append_line(path: str | Path, line: bytes) -> None:
    """Append ``line`` (ending in a newline) and fsync it. A torn previous line (a killed append) must
    not swallow this one, so it starts on a fresh line if needed."""
    with open(path, "ab") as f:
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def missing_fields(rec: dict, fields: tuple[str, ...]) -> str | None:
    """'missing field X' for the first of ``fields`` that ``rec`` lacks, else None."""
    absent = next((k for k in fields if k not in rec), None)
    return f"missing field '{absent}'" if absent else None


@contextlib.contextmanager
def exclusive(lock_file: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_file`` (created if needed); a second holder fails at once with a
    one-line error naming ``what``. The kernel drops the lock when the process dies, so a killed run
    never leaves a stale lock."""
    fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VtcError(f"{what} is being written by another process") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def removed_on_error(path: str | Path, made: bool, keep: str) -> Iterator[None]:
    """On an error inside, remove ``path`` if this run created it (``made``) and ``path/keep`` does not
    exist yet: a run that fails before it produced anything leaves no empty output behind, and one
    that produced something keeps it for the resume."""
    try:
        yield
    except BaseException:
        if made and not (Path(path) / keep).exists():
            shutil.rmtree(path, ignore_errors=True)
        raise


class Journal:
    """An append-only JSONL file of records keyed by one field, the latest record per key winning: the
    store index (one line per video) and the evaluation's answer journal (one per answered request).
    Each append is fsynced before it returns; on read, a torn, damaged or foreign line (``check`` says
    why) is skipped with one warning, so a half-written record never counts."""

    def __init__(self, path: str | Path, key: str, check: Callable[[dict], str | None]):
        self.path, self.key, self.check = Path(path), key, check
        self._latest: dict[str, dict] | None = None

    def latest(self, reload: bool = False) -> dict[str, dict]:
        """key -> the latest record with that key (read once, then kept up to date by ``append``)."""
        if self._latest is None or reload:
            self._latest = {rec[self.key]: rec for rec in read_jsonl(self.path, self.check)}
        return self._latest

    def append(self, rec: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, rec)
        self.latest()[rec[self.key]] = rec
