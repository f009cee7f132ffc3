"""A store's index: which videos are done or failed, found without reading every line.

Layout, relative to the store's root::

    index.jsonl                        the log: one line per commit, appended and fsynced (local paths)
    index/parts/<writer>/<seq>.jsonl   one object per commit (object stores, which have no appends)
    index/table.json                   the manifest: bucket count, generation, how far the table reaches
    index/table/<gen>/<bucket>.jsonl   the table: one line [seq, entry] per id, bucket = hash(id) mod count

What a store holds is the table, then the log from the manifest's byte offset, then the parts after
the manifest's mark, the last entry for an id winning. A lookup reads the manifest, one bucket (about
1,000 entries at most on average) and the uncompacted rest, which a writer keeps short by compacting
whenever it grows past a threshold: the cost of opening a store and finding a video does not grow
with the number of videos, and needs no listing of them (only of the writers with uncompacted parts).

Crash safety. Compaction never removes a log line: locally the table is derived data, so ``index/``
could be deleted and rebuilt from ``index.jsonl``. Each bucket file is replaced atomically (tmp +
rename locally, one PUT on an object store) and the manifest is replaced last. Whatever the moment a
writer dies, a reader sees one manifest M and bucket files each either before or after the compaction;
a bucket ahead of M holds the state of the log up to some point past M's offset, and replaying the log
from M's offset over it gives the same latest entry per id (replaying lines that a bucket already
holds changes nothing, because the last line for an id always wins). The same holds for parts with
M's mark; absorbed parts are deleted only after the manifest that records the mark is in place, and
deleting them twice is harmless. A resize (more buckets) writes a new generation beside the old one
and switches the manifest to it: a reader still holding the old manifest finds an old bucket gone,
re-reads the manifest and retries.

Locally the flock already serialises writers, so successive writers' lines are simply consecutive in
``index.jsonl`` (today's file, byte for byte): a kill -9 leaves exactly what it left before.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

from vtc.cache.jsonl import parse_jsonl
from vtc.errors import VtcError, warn

LOG_FILE = "index.jsonl"
MANIFEST = "index/table.json"
TABLE_DIR = "index/table"
PARTS_DIR = "index/parts"
FORMAT = 1
# A lookup parses one bucket: ~1,000 short JSON lines is ~1 ms. Buckets double when the average
# passes this, so right after a resize they hold half of it.
BUCKET_TARGET = 1000
# Uncompacted log lines a writer tolerates: a lookup reads them all (~2,000 lines, a few ms). Below it
# a store has no table at all, so small stores look exactly as they always did.
LOG_COMPACT_AT = 2000
# Uncompacted parts a writer tolerates on an object store: each costs a reader one GET.
PARTS_COMPACT_AT = 100
_BUCKET_CACHE = 64  # parsed buckets kept per open index: repeated has() over nearby ids stay cheap


def bucket_of(video_id: str, buckets: int) -> int:
    """Stable across processes and versions (not Python's salted hash). Bucket counts are powers of two,
    so doubling splits bucket b into b and b + old count: a resize reads each old bucket once."""
    h = hashlib.blake2b(video_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") % buckets


def _line(entry: dict) -> bytes:
    return (json.dumps(entry, sort_keys=True, default=str) + "\n").encode("utf-8")


def _bucket_path(gen: str, b: int) -> str:
    return f"{TABLE_DIR}/{gen}/{b:06d}.jsonl"


def writer_id(after: str = "") -> str:
    """A name for one writing session's parts that sorts after ``after`` (the newest part name there
    is) and before any later session's: a UTC timestamp first, bumped past the last writer's if this
    machine's clock is behind it, then host, pid and a random tag so two writers never share a name."""
    now = datetime.now(timezone.utc)
    try:
        last = datetime.strptime(after.split("-", 1)[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)
    except ValueError:
        last = None
    if last is not None and now <= last:
        now = last + timedelta(microseconds=1)
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"
    return f"{now:%Y%m%dT%H%M%S%f}-{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Index:
    """The index of one store, read lazily: opening reads nothing, :meth:`get` reads the manifest, one
    bucket and the uncompacted rest; :meth:`entries` reads everything. What was read is kept (and kept
    up to date by this process's own appends); ``forget`` drops it.

    ``log``: append commits to ``index.jsonl`` (local paths) or write one part per commit (object
    stores). ``check`` says why an entry is unusable (torn, foreign) or None.
    """

    def __init__(self, fs, check: Callable[[dict], str | None], log: bool):
        self.fs, self.check, self.log = fs, check, log
        self.writer: str | None = None  # parts: this writing session's name
        self._seq = 0
        self.autocompact = False  # set while this process holds the store's write lock or lease
        self.forget()

    def forget(self, keep_all: bool = False) -> None:
        self._manifest: dict | None = None
        self._manifest_read = False
        self._pending: dict[str, dict] | None = None  # log tail + parts: id -> latest entry
        self._pending_count = 0  # lines / parts read into _pending or appended since (the compaction trigger)
        self._pending_parts: list[str] = []
        self._buckets: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        if not keep_all:
            self._all: dict[str, dict] | None = None

    # ---------------------------------------------------------------- manifest
    def _read_manifest(self) -> dict | None:
        raw = self.fs.read(MANIFEST)
        if raw is None:
            return None
        try:
            m = json.loads(raw.decode("utf-8"))
            ok = (
                isinstance(m, dict)
                and m.get("format") == FORMAT
                and isinstance(m.get("buckets"), int)
                and m["buckets"] >= 1
                and isinstance(m.get("gen"), str)
                and all(isinstance(m.get(k), int) for k in ("count", "next_seq", "log_bytes", "log_lines"))
                and isinstance(m.get("parts_mark"), str)
            )
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if ok:
            return m
        if self.log:
            # locally the table is derived from index.jsonl: reading the whole log loses nothing
            warn(f"{self.fs.show(MANIFEST)} is damaged; reading the whole {LOG_FILE} instead")
            return None
        raise VtcError(f"{self.fs.show(MANIFEST)} is damaged; this store's index cannot be read")

    def manifest(self) -> dict | None:
        if not self._manifest_read:
            self._manifest, self._manifest_read = self._read_manifest(), True
        return self._manifest

    # ---------------------------------------------------------------- the uncompacted rest
    def _log_tail(self, m: dict | None, complete_only: bool) -> tuple[list[dict], int, int]:
        """Entries of the log past the manifest's offset, and the offset and line count they end at.
        ``complete_only``: stop at the last newline (what a compaction may absorb; a partial last line
        is a killed or in-flight append)."""
        start, first = (m["log_bytes"], m["log_lines"]) if m else (0, 0)
        data = self.fs.read(LOG_FILE, start) or b""
        if complete_only:
            data = data[: data.rfind(b"\n") + 1]
        recs = (
            parse_jsonl(iter(data.split(b"\n")), self.check, self.fs.show(LOG_FILE), first + 1)
            if data
            else []
        )
        return recs, start + len(data), first + data.count(b"\n")

    def _parts(self, m: dict | None) -> tuple[list[str], list[str]]:
        """(uncompacted parts, parts a compaction absorbed but died before removing), oldest first:
        writers' names sort by when they started, then by sequence. A listing of the writers that have
        parts left, not of videos."""
        mark = m["parts_mark"] if m else ""
        new, old = [], []
        for w in self.fs.list(PARTS_DIR):
            for s in self.fs.list(f"{PARTS_DIR}/{w}"):
                if s.endswith(".jsonl"):
                    (old if f"{w}/{s}" <= mark else new).append(f"{w}/{s}")
        return sorted(new), sorted(old)

    def _read_parts(self, names: Iterable[str]) -> list[dict]:
        recs = []
        for name in names:
            data = self.fs.read(f"{PARTS_DIR}/{name}")
            if data is None:  # absorbed and deleted by a compaction since the listing: the table has it
                continue
            recs += parse_jsonl(iter(data.split(b"\n")), self.check, self.fs.show(f"{PARTS_DIR}/{name}"))
        return recs

    def pending(self) -> dict[str, dict]:
        """id -> latest entry among what no compaction has absorbed yet."""
        if self._pending is None:
            m = self.manifest()
            recs, _, _ = self._log_tail(m, complete_only=False)
            parts = self._pending_parts = self._parts(m)[0]
            recs += self._read_parts(parts)
            self._pending = {}
            for r in recs:
                self._pending[r["id"]] = r
            self._pending_count = len(recs) if self.log else len(parts)
        return self._pending

    # ---------------------------------------------------------------- the table
    def _bucket(self, m: dict, b: int) -> bytes | None:
        """The bytes of bucket ``b``; None if the manifest's generation is gone (a resize since)."""
        key = (m["gen"], b)
        if key in self._buckets:
            self._buckets.move_to_end(key)
            return self._buckets[key]
        data = self.fs.read(_bucket_path(m["gen"], b))
        if data is None:
            if self._generation_changed(m):
                return None
            data = b""  # an empty bucket is not written
        self._buckets[key] = data
        if len(self._buckets) > _BUCKET_CACHE:
            self._buckets.popitem(last=False)
        return data

    def get(self, video_id: str) -> dict | None:
        """The latest entry for ``video_id``, or None: the uncompacted rest, else one bucket."""
        if self._all is not None:
            return self._all.get(video_id)
        for _ in range(3):
            e = self.pending().get(video_id)
            if e is not None:
                return e
            m = self.manifest()
            if m is None:
                return None
            b = bucket_of(video_id, m["buckets"])
            data = self._bucket(m, b)
            if data is not None:
                row = _find_rows(data, [video_id], self.check, self.fs.show(_bucket_path(m["gen"], b)))
                return row[video_id][1] if row else None
            self.forget()  # a compaction resized the table under us: start again from its manifest
        raise VtcError(f"{self.fs.show(MANIFEST)} keeps changing; is another process compacting it?")

    def get_many(self, ids: Iterable[str]) -> dict[str, dict]:
        """id -> latest entry for those of ``ids`` that have one, reading each needed bucket once (and
        holding one at a time): what is left to do of a list, without the whole index in memory."""
        ids = list(dict.fromkeys(ids))
        if self._all is not None:
            return {v: self._all[v] for v in ids if v in self._all}
        for _ in range(3):
            pend, m = self.pending(), self.manifest()
            out = {v: pend[v] for v in ids if v in pend}
            if m is None:
                return out
            by_bucket: dict[int, list[str]] = {}
            for v in ids:
                if v not in out:
                    by_bucket.setdefault(bucket_of(v, m["buckets"]), []).append(v)
            for b in sorted(by_bucket):
                data = self.fs.read(_bucket_path(m["gen"], b))
                if data is None and self._generation_changed(m):
                    break
                name = self.fs.show(_bucket_path(m["gen"], b))
                rows = _find_rows(data or b"", by_bucket[b], self.check, name)
                out.update((v, rows[v][1]) for v in by_bucket[b] if v in rows)
            else:
                return {v: out[v] for v in ids if v in out}  # in the order asked
            self.forget()
        raise VtcError(f"{self.fs.show(MANIFEST)} keeps changing; is another process compacting it?")

    def entries(self, reload: bool = False) -> dict[str, dict]:
        """id -> latest entry for every video, in the order ids first appeared (as the log reads)."""
        if reload:
            self.forget()
        if self._all is None:
            for _ in range(3):
                rows = self._table_rows()
                if rows is not None:
                    break
                self.forget()
            else:
                raise VtcError(f"{self.fs.show(MANIFEST)} keeps changing; is another process compacting it?")
            rows.sort(key=lambda r: r[0])
            out = {r[1]["id"]: r[1] for r in rows}
            del rows
            out.update(self.pending())
            self._all = out
        return self._all

    def _table_rows(self) -> list[list] | None:
        """Every [seq, entry] of the table; None if a resize replaced its generation meanwhile."""
        m = self.manifest()
        if m is None:
            return []
        rows: list[list] = []
        for b in range(m["buckets"]):
            data = self.fs.read(_bucket_path(m["gen"], b))
            if data is None and self._generation_changed(m):
                return None
            rows += _parse_table(data or b"", self.check, self.fs.show(_bucket_path(m["gen"], b))).values()
        return rows

    def _generation_changed(self, m: dict) -> bool:
        fresh = self._read_manifest()
        return fresh is not None and fresh["gen"] != m["gen"]

    # ---------------------------------------------------------------- write
    def append(self, entry: dict) -> None:
        """Record ``entry`` durably: a log line (fsynced) locally, one object per commit on an object store."""
        line = _line(entry)
        pending = self.pending()  # read before the append, so the new line is counted once
        if self.log:
            self.fs.append(LOG_FILE, line)
        else:
            if self.writer is None:
                raise VtcError(f"{self.fs.show()}: commit inside Store.writing() on an object store")
            from vtc.cache.lease import check_held

            check_held(self.fs)  # a writer whose lease was taken over must not commit any more
            self.fs.write(f"{PARTS_DIR}/{self.writer}/{self._seq:010d}.jsonl", line)
            self._seq += 1
        pending[entry["id"]] = entry
        self._pending_count += 1
        if self._all is not None:
            self._all[entry["id"]] = entry
        if self.autocompact and self._pending_count > (LOG_COMPACT_AT if self.log else PARTS_COMPACT_AT):
            self.compact()

    def begin(self) -> None:
        """A writing session starts (the caller holds the lock or lease)."""
        self.forget(keep_all=True)
        m = self.manifest()
        self.pending()
        if self.log:
            # Parts in a local store (one synced down from an object store) sort after the log: absorb
            # them before this session appends lines newer than they are.
            other = bool(self._pending_parts)
        else:
            other = bool(self._log_tail(m, complete_only=True)[0])  # a local store uploaded as is
            self.writer = writer_id(max([m["parts_mark"] if m else "", *self._pending_parts]))
            self._seq = 0
        if other or self._pending_count > (LOG_COMPACT_AT if self.log else PARTS_COMPACT_AT):
            self.compact()
        self.autocompact = True

    def end(self) -> None:
        """A writing session ends: on an object store, absorb its parts so readers need not GET them."""
        self.autocompact = False
        if not self.log:
            from vtc.cache.lease import check_held

            check_held(
                self.fs
            )  # a session that lost its lease midway says so, even if it committed nothing since
        if self._pending is None:
            return
        if self._pending_count > (LOG_COMPACT_AT if self.log else 0):
            self.compact()

    def compact(self) -> None:
        """Absorb the log tail and parts into the table (the caller holds the lock or lease).

        Order of effects: bucket files (each atomic), then the manifest, then deleting absorbed parts
        and stale generations; see the module docstring for why a crash between any two is harmless."""
        if not self.log:
            from vtc.cache.lease import check_held

            check_held(self.fs)  # a writer that lost its lease must not rewrite the table
        m = self._read_manifest()
        recs, log_bytes, log_lines = self._log_tail(m, complete_only=True)
        parts, absorbed = self._parts(m)
        recs += self._read_parts(parts)
        stale = [g for g in self.fs.list(TABLE_DIR) if m is None or g != m["gen"]]
        if not recs and not parts and not absorbed and not stale:
            self.forget(keep_all=True)
            return
        pending: dict[str, dict] = {}
        for r in recs:
            pending[r["id"]] = r
        # A new id's seq is its first appearance: entries() keeps the order the log had. Gaps are fine.
        next_seq = m["next_seq"] if m else 0
        seq_of = {v: next_seq + i for i, v in enumerate(pending)}
        count = m["count"] if m else 0
        old_buckets = m["buckets"] if m else 0
        estimate = count + len(pending)
        if m is None or estimate > BUCKET_TARGET * old_buckets:
            buckets = max(1, old_buckets)
            while estimate > buckets * BUCKET_TARGET // 2:
                buckets *= 2
            gen = f"g{time.time_ns():x}{secrets.token_hex(2)}"
            count = self._resize(m, gen, buckets, pending, seq_of)
        else:
            buckets, gen = old_buckets, m["gen"]
            by_bucket: dict[int, list[str]] = {}
            for v in pending:
                by_bucket.setdefault(bucket_of(v, buckets), []).append(v)
            writes = {}
            for b, vs in sorted(by_bucket.items()):
                path = _bucket_path(gen, b)
                data = self.fs.read(path) or b""
                writes[path], added = _merge(
                    data, {v: pending[v] for v in vs}, seq_of, self.check, self.fs.show(path)
                )
                count += added
            self.fs.write_many(writes)
        new = {
            "format": FORMAT,
            "buckets": buckets,
            "gen": gen,
            "count": count,
            "next_seq": next_seq + len(pending),
            "log_bytes": log_bytes,
            "log_lines": log_lines,
            "parts_mark": max([m["parts_mark"] if m else "", *parts]),
        }
        self.fs.write(MANIFEST, json.dumps(new, sort_keys=True).encode() + b"\n")
        for name in parts + absorbed:
            self.fs.remove(f"{PARTS_DIR}/{name}")
        for w in {name.split("/", 1)[0] for name in parts + absorbed}:
            self.fs.prune(f"{PARTS_DIR}/{w}")
        for g in self.fs.list(TABLE_DIR):
            if g != gen:  # a crashed resize's, or the generation this one replaced
                self.fs.rmtree(f"{TABLE_DIR}/{g}")
        self.forget(keep_all=True)

    def _resize(self, m: dict | None, gen: str, buckets: int, pending: dict, seq_of: dict) -> int:
        """Write every bucket of a new generation with ``buckets`` buckets: the old table (one old bucket
        in memory at a time; it splits into the new buckets congruent to it) merged with ``pending``."""
        old = m["buckets"] if m else 1
        by_new: dict[int, list[str]] = {}
        for v in pending:
            by_new.setdefault(bucket_of(v, buckets), []).append(v)
        count, writes = 0, {}
        for ob in range(old):
            if m is not None:
                path = _bucket_path(m["gen"], ob)
                rows = _parse_table(self.fs.read(path) or b"", self.check, self.fs.show(path))
            else:
                rows = {}
            split: dict[int, dict[str, list]] = {}
            for v, row in rows.items():
                split.setdefault(bucket_of(v, buckets), {})[v] = row
            for nb in range(ob, buckets, old):
                part = split.get(nb, {})
                for v in by_new.get(nb, ()):
                    if v in part:
                        part[v][1] = pending[v]
                    else:
                        part[v] = [seq_of[v], pending[v]]
                if part:
                    writes[_bucket_path(gen, nb)] = _table_bytes(part)
                    count += len(part)
            if len(writes) >= 64 or ob == old - 1:  # bounded memory, batched syncs
                self.fs.write_many(writes)
                writes = {}
        return count


# One encoder for every table row: building a JSONEncoder per json.dumps call costs more than the row.
# Compact separators: a row's id is then always the bytes '"id":' + json.dumps(id), which lookups search.
_ROW = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _row_bytes(seq: int, entry: dict) -> bytes:
    return f"[{seq},{_ROW.encode(entry)}]\n".encode()


def _table_bytes(rows: dict[str, list]) -> bytes:
    return b"".join(_row_bytes(seq, entry) for seq, entry in rows.values())


def _locate(data: bytes, video_id: str, check, name: str) -> tuple[int, int, list] | None:
    """(start, end, [seq, entry]) of ``video_id``'s row in a bucket's bytes (end: past its newline)."""
    needle = b'"id":' + json.dumps(video_id).encode()
    at = data.find(needle)
    while at >= 0:
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        end = len(data) if end < 0 else end + 1
        # a nested "id" key of some other field could match too: the parsed row decides
        row = _parse_table(data[start:end], check, name).get(video_id)
        if row is not None:
            return start, end, row
        at = data.find(needle, end)
    return None


def _merge(
    data: bytes, updates: dict[str, dict], seq_of: dict[str, int], check, name: str
) -> tuple[bytes, int]:
    """A bucket's bytes with ``updates`` (id -> newest entry) applied, and how many ids it gained. A
    compaction touches a few rows of most buckets: those rows are found and spliced in place, which is
    ~20x cheaper than parsing and re-encoding the whole bucket (still done when many rows change)."""
    if len(updates) * 16 > data.count(b"\n"):
        rows = _parse_table(data, check, name)
        added = 0
        for v, e in updates.items():
            if v in rows:
                rows[v][1] = e
            else:
                rows[v], added = [seq_of[v], e], added + 1
        return _table_bytes(rows), added
    spans, new = [], []
    for v, e in updates.items():
        hit = _locate(data, v, check, name)
        if hit is None:
            new.append(_row_bytes(seq_of[v], e))
        else:
            spans.append((hit[0], hit[1], _row_bytes(hit[2][0], e)))
    out, pos = [], 0
    for start, end, row in sorted(spans):
        out += [data[pos:start], row]
        pos = end
    rest = data[pos:]
    out.append(rest if not rest or rest.endswith(b"\n") else rest + b"\n")
    return b"".join(out + new), len(new)


def _find_rows(
    data: bytes, ids: list[str], check: Callable[[dict], str | None], name: str
) -> dict[str, list]:
    """id -> [seq, entry] for those of ``ids`` in one bucket's bytes. A few ids are found by searching
    for their ``"id":...`` bytes and parsing only those lines (a lookup is then ~50 us, not the ~1 ms
    of parsing the bucket); many ids parse the whole bucket once."""
    if len(ids) * 16 > data.count(b"\n"):
        rows = _parse_table(data, check, name)
        return {v: rows[v] for v in ids if v in rows}
    hits = ((v, _locate(data, v, check, name)) for v in ids)
    return {v: hit[2] for v, hit in hits if hit is not None}


def _parse_table(data: bytes, check: Callable[[dict], str | None], name: str) -> dict[str, list]:
    """id -> [seq, entry] of one bucket file. We wrote it whole, so it parses at once as one array; a
    damaged line (a disk fault, a foreign edit) is skipped with one warning, like a log line."""
    if not data:
        return {}
    try:
        rows = json.loads(b"[" + data.rstrip(b"\n").replace(b"\n", b",") + b"]")
        if all(
            isinstance(r, list)
            and len(r) == 2
            and isinstance(r[0], int)
            and isinstance(r[1], dict)
            and not check(r[1])
            for r in rows
        ):
            return {r[1]["id"]: r for r in rows}
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass

    out, bad = {}, []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            r = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            bad.append((n, "not JSON (damaged)"))
            continue
        ok = isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and isinstance(r[1], dict)
        why = check(r[1]) if ok else "not a table row"
        if why:
            bad.append((n, why))
        else:
            out[r[1]["id"]] = r
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        warn(f"{name}: skipped line {bad[0][0]}: {bad[0][1]}{more}")
    return out
