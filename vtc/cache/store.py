"""A vtc store: one zarr v3 group holding per-video arrays, an append-only index and provenance.

Layout::

    STORE.zarr/
      zarr.json            group attrs {"vtc": {schema, kind, identity, provenance...}}
      index.jsonl          one JSON line per finished video ("done" or "failed"); last line for an id wins
      .lock                held (flock) by the one process writing the store
      videos/<key>/        one group per video: its arrays and attrs (key = readable id + hash)

A video counts as present only once its line is in ``index.jsonl``. The line is appended (and fsynced)
after every array of the video is written, so a run killed at any moment leaves either a complete,
indexed video or an unindexed group that the next run overwrites: never a half-written entry that
looks complete, never a duplicate. Looking a video up reads the index, not a directory listing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vtc.errors import VtcError
from vtc.versions import library_versions, stable_hash

SCHEMA_VERSION = 1
INDEX_FILE = "index.jsonl"
LOCK_FILE = ".lock"


def video_key(video_id: str) -> str:
    """A filesystem-safe, collision-free group name for a video id: readable slug + hash of the id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("._")[:80] or "video"
    return f"{slug}-{stable_hash(video_id, 8)}"


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    return None if a == b else f"{path}: store has {a!r}, this run has {b!r}"


class Store:
    """Read or append to a vtc store. Use :meth:`create` to write, :meth:`open` to read."""

    def __init__(self, path: Path, group, meta: dict):
        self.path = Path(path)
        self._group = group
        self.meta = meta
        self._entries: dict[str, dict] | None = None

    # ---------------------------------------------------------------- open / create
    @classmethod
    def create(cls, path: str | Path, kind: str, identity: dict, provenance: dict | None = None) -> Store:
        """Open ``path`` for appending, creating it if needed.

        ``identity`` is what makes two runs' outputs comparable (encoder, layer, preprocessing, sampling,
        method config...). Appending to a store whose identity differs is refused with a one-line error.
        ``provenance`` is recorded on creation only (versions, command, time).
        """
        import zarr

        path = Path(path)
        identity = json.loads(json.dumps(identity))  # normalise tuples/ints exactly as stored
        if (path / "zarr.json").exists():
            store = cls.open(path, kind=kind)
            diff = _first_difference(store.meta.get("identity"), identity)
            if diff:
                raise VtcError(
                    f"refusing to append to {path}: different provenance ({diff}); use a new store"
                )
            return store
        if path.exists() and any(path.iterdir()):
            raise VtcError(f"{path} exists and is not a vtc store; choose a new path")
        group = zarr.open_group(str(path), mode="a")
        meta = {
            "schema": SCHEMA_VERSION,
            "kind": kind,
            "identity": identity,
            "identity_hash": stable_hash(identity),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": library_versions(),
            **(provenance or {}),
        }
        group.attrs.update({"vtc": meta})
        group.require_group("videos")
        (path / INDEX_FILE).touch()
        return cls(path, group, meta)

    @classmethod
    def open(cls, path: str | Path, kind: str | None = None) -> Store:
        import zarr

        path = Path(path)
        if not (path / "zarr.json").exists():
            raise VtcError(
                f"{path} is not a vtc store (no zarr.json); run `vtc extract` or `vtc compress` first"
            )
        group = zarr.open_group(str(path), mode="a")
        meta = dict(group.attrs.get("vtc") or {})
        if not meta:
            raise VtcError(f"{path} is a zarr group but not a vtc store (no 'vtc' attributes)")
        if meta.get("schema") != SCHEMA_VERSION:
            raise VtcError(
                f"{path} has store schema {meta.get('schema')}; this vtc reads schema {SCHEMA_VERSION}"
            )
        if kind is not None and meta.get("kind") != kind:
            raise VtcError(f"{path} is a {meta.get('kind')} store, expected a {kind} store")
        return cls(path, group, meta)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    # ---------------------------------------------------------------- index
    def entries(self, reload: bool = False) -> dict[str, dict]:
        """id -> latest index entry. A torn last line (killed mid-append) is ignored."""
        if self._entries is None or reload:
            entries: dict[str, dict] = {}
            index = self.path / INDEX_FILE
            if index.exists():
                with open(index, encoding="utf-8") as f:
                    for line in f:
                        try:
                            e = json.loads(line)
                        except json.JSONDecodeError:
                            continue  # only ever the torn tail of a killed append
                        if isinstance(e, dict) and "id" in e:
                            entries[e["id"]] = e
            self._entries = entries
        return self._entries

    def done(self) -> dict[str, dict]:
        return {k: e for k, e in self.entries().items() if e["status"] == "done"}

    def failed(self) -> dict[str, dict]:
        return {k: e for k, e in self.entries().items() if e["status"] == "failed"}

    def _append(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with open(self.path / INDEX_FILE, "a", encoding="utf-8") as f:
            # A torn previous line must not swallow this one: start on a fresh line if needed.
            if f.tell() > 0:
                with open(self.path / INDEX_FILE, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write("\n")
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.entries()[entry["id"]] = entry

    # ---------------------------------------------------------------- write
    @contextlib.contextmanager
    def writing(self) -> Iterator[Store]:
        """Hold the store's write lock: a second writer fails at once instead of interleaving."""
        fd = os.open(self.path / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise VtcError(f"{self.path} is being written by another process") from None
            yield self
        finally:
            os.close(fd)

    def write(
        self,
        video_id: str,
        arrays: dict[str, np.ndarray],
        attrs: dict,
        summary: dict | None = None,
        chunks: dict[str, tuple] | None = None,
        uncompressed: tuple[str, ...] = (),
    ) -> None:
        """Write one video's arrays, then its attrs, then (last) its index line.

        Arrays named in ``uncompressed`` are stored raw: float16 features shrink by under 10% with zarr's
        default zstd, and reading them raw is about twice as fast (measured on 32x729x1152).
        """
        key = video_key(video_id)
        videos = self._group.require_group("videos")
        g = videos.create_group(key, overwrite=True)  # drops whatever a killed run left half-written
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            ch = (chunks or {}).get(name) or arr.shape or (1,)
            kw = {"compressors": None} if name in uncompressed else {}
            a = g.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=ch, overwrite=True, **kw)
            a[...] = arr
        g.attrs.update({**attrs, "id": video_id, "complete": True})
        self._append({"id": video_id, "key": key, "status": "done", "time": time.time(), **(summary or {})})

    def fail(self, video_id: str, reason: str, **info) -> None:
        self._append({"id": video_id, "status": "failed", "reason": reason, "time": time.time(), **info})

    # ---------------------------------------------------------------- read
    def has(self, video_id: str) -> bool:
        e = self.entries().get(video_id)
        return e is not None and e["status"] == "done"

    def read(self, video_id: str) -> tuple[dict[str, Any], dict]:
        """(name -> zarr array, attrs) of a done video; arrays load on indexing (``arr[:]``)."""
        e = self.entries().get(video_id)
        if e is None or e["status"] != "done":
            why = f" (failed: {e['reason']})" if e else ""
            raise VtcError(f"video '{video_id}' is not in {self.path}{why}")
        g = self._group["videos"][e["key"]]
        return {name: arr for name, arr in g.arrays()}, dict(g.attrs)

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
