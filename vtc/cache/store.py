"""A vtc store: one zarr v3 group holding per-video arrays, an index and provenance.

Layout::

    STORE.zarr/
      zarr.json            group attrs {"vtc": {schema, kind, identity, provenance...}}
      index.jsonl          one JSON line per finished video ("done" or "failed"); last line for an id wins
      index/               once the log is long: a hash-bucketed table of it (see vtc.cache.index)
      .lock                held (flock) by the one process writing the store
      videos/<key>/        one group per video: its arrays and attrs (key = readable id + hash)

A video counts as present only once its entry is in the index. The line is appended (and fsynced)
after every array of the video is written, so a run killed at any moment leaves either a complete,
indexed video or an unindexed group that the next run overwrites: never a half-written entry that
looks complete, never a duplicate. Looking a video up reads one bucket of the index, not a directory
listing and not the whole index.

The same store can live under ``s3://bucket/prefix`` (through fsspec): commits are then one object
each (no appends there) and the write lock is a lease object (``vtc.cache.lease``).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vtc.cache.fs import LocalFS, ObjectFS, as_url, open_fs
from vtc.cache.index import LOG_FILE, Index
from vtc.cache.jsonl import missing_fields
from vtc.errors import VtcError
from vtc.versions import library_versions, stable_hash

SCHEMA_VERSION = 1
INDEX_FILE = LOG_FILE
# Fields an index line must have to count; anything else is a foreign line and is skipped with a warning.
_ENTRY_FIELDS = {"done": ("id", "status", "key"), "failed": ("id", "status", "reason")}
_DONE_FIELDS = {"tokens": ("n_input_tokens", "n_llm_tokens", "n_frames")}  # what readers of the kind use


def _entry_problem(e: dict, kind: str | None) -> str | None:
    status = e.get("status")
    if status not in _ENTRY_FIELDS:
        return "missing field 'status'" if status is None else f"unknown status {status!r}"
    fields = _ENTRY_FIELDS[status] + (_DONE_FIELDS.get(kind, ()) if status == "done" else ())
    return missing_fields(e, fields) or (None if isinstance(e["id"], str) else "'id' is not a string")


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
    """Read or append to a vtc store. Use :meth:`create` to write, :meth:`open` to read.

    ``path`` is a local path (kept as a ``Path``) or an ``s3://`` URL (kept as the string)."""

    def __init__(self, path: str | Path, group, meta: dict, fs: LocalFS | ObjectFS | None = None):
        self._fs = fs if fs is not None else open_fs(path)
        self.path = as_url(path) or Path(path)
        self._group = group
        self.meta = meta
        check = lambda e: _entry_problem(e, self.meta.get("kind"))  # noqa: E731 - reads meta when called
        self._index = Index(self._fs, check, log=self._fs.local)
        self.created = False  # set by create() when this process made the store

    # ---------------------------------------------------------------- open / create
    @classmethod
    def create(cls, path: str | Path, kind: str, identity: dict, provenance: dict | None = None) -> Store:
        """Open ``path`` for appending, creating it if needed.

        ``identity`` is what makes two runs' outputs comparable (encoder, layer, preprocessing, sampling,
        method config...). Appending to a store whose identity differs is refused with a one-line error.
        ``provenance`` is recorded on creation only (versions, command, time). The check and the creation
        happen under the store's write lock, so two runs started together cannot both create it (or one
        write under the other's identity). ``created`` tells whether this call made the store.
        """
        fs = open_fs(path)
        path = as_url(path) or Path(path)
        identity = json.loads(json.dumps(identity))  # normalise tuples/ints exactly as stored
        if not fs.exists("zarr.json") and fs.foreign():
            raise VtcError(f"{path} exists and is not a vtc store; choose a new path")
        made = fs.mkdir()
        # What this call made is removed on failure under the lock: never another run's store in the making.
        with fs.exclusive(str(path)), _removed_on_error(fs, made):
            return cls._create_locked(path, fs, kind, identity, provenance)

    @classmethod
    def _create_locked(cls, path, fs, kind: str, identity: dict, provenance: dict | None) -> Store:
        import zarr

        if fs.exists("zarr.json"):
            store = cls.open(path, kind=kind)
            diff = _first_difference(store.meta.get("identity"), identity)
            if diff:
                raise VtcError(
                    f"refusing to append to {path}: different provenance ({diff}); use a new store"
                )
            return store
        if fs.foreign():
            raise VtcError(f"{path} exists and is not a vtc store; choose a new path")
        meta = {
            "schema": SCHEMA_VERSION,
            "kind": kind,
            "identity": identity,
            "identity_hash": stable_hash(identity),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": library_versions(),
            **(provenance or {}),
        }
        if fs.local:
            fs.write(INDEX_FILE, b"")  # the log; an object store's commits are objects of their own
        # zarr.json is written once, with the attributes: a run killed here leaves no group that looks
        # like a store without being one.
        group = zarr.create_group(fs.zarr_store(), attributes={"vtc": meta})
        group.require_group("videos")
        store = cls(path, group, meta, fs)
        store.created = True
        return store

    @classmethod
    def open(cls, path: str | Path, kind: str | None = None) -> Store:
        """Open a store to read (or to append under :meth:`writing`): reads ``zarr.json`` only; the index
        is read when first asked."""
        import zarr

        fs = open_fs(path)
        path = as_url(path) or Path(path)
        if not fs.exists("zarr.json"):
            raise VtcError(
                f"{path} is not a vtc store (no zarr.json); run `vtc extract` or `vtc compress` first"
            )
        try:
            group = zarr.open_group(fs.zarr_store(), mode="a")
            meta = group.attrs.get("vtc")
        except Exception as e:  # a torn or foreign zarr.json: JSON and zarr-format errors alike
            raise VtcError(
                f"{fs.show('zarr.json')} is unreadable ({type(e).__name__}); not a vtc store"
            ) from None
        meta = dict(meta) if isinstance(meta, dict) else {}
        if not meta:
            raise VtcError(f"{path} is a zarr group but not a vtc store (no 'vtc' attributes)")
        if meta.get("schema") != SCHEMA_VERSION:
            raise VtcError(
                f"{path} has store schema {meta.get('schema')}; this vtc reads schema {SCHEMA_VERSION}"
            )
        if kind is not None and meta.get("kind") != kind:
            raise VtcError(f"{path} is a {meta.get('kind')} store, expected a {kind} store")
        return cls(path, group, meta, fs)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    # ---------------------------------------------------------------- index
    def entries(self, reload: bool = False) -> dict[str, dict]:
        """id -> latest index entry, every video (reads the whole index once; :meth:`get` reads one
        bucket). Torn, damaged or foreign lines are skipped with one warning."""
        return self._index.entries(reload)

    def done(self) -> dict[str, dict]:
        return {k: e for k, e in self.entries().items() if e["status"] == "done"}

    def failed(self) -> dict[str, dict]:
        return {k: e for k, e in self.entries().items() if e["status"] == "failed"}

    def get(self, video_id: str) -> dict | None:
        """The latest index entry of one video ("done" or "failed"), or None: reads one bucket of the
        index and what is not compacted yet, whatever the number of videos."""
        return self._index.get(video_id)

    def get_many(self, video_ids: Iterable[str]) -> dict[str, dict]:
        """id -> latest entry for those of ``video_ids`` in the index, in the order given; each bucket is
        read once and one at a time, so what is left of a list costs the list, not the whole index."""
        return self._index.get_many(video_ids)

    def _append(self, entry: dict) -> None:
        self._index.append(entry)

    # ---------------------------------------------------------------- write
    @contextlib.contextmanager
    def writing(self) -> Iterator[Store]:
        """Hold the store's write lock (a lease on an object store): a second writer fails at once
        instead of interleaving. While held, commits compact the index whenever its uncompacted rest
        grows past a threshold, and the end of a clean session compacts what an object store left."""
        with self._fs.exclusive(str(self.path)):
            self._index.begin()
            try:
                yield self
            except BaseException:
                self._index.autocompact = False  # the error matters, not the compaction
                raise
            self._index.end()

    @contextlib.contextmanager
    def discarded_on_error(self) -> Iterator[Store]:
        """On an error inside, :meth:`discard_if_unused`; list it before :meth:`writing` in one ``with``
        so the write lock is released first."""
        try:
            yield self
        except BaseException:
            self.discard_if_unused()
            raise

    def discard_if_unused(self) -> None:
        """Remove the store if this process created it and nothing was recorded in it: a run that failed
        a precondition (a missing array, a broken checkpoint) must not leave an empty store behind."""
        if not self.created:
            return
        with contextlib.suppress(VtcError), self._fs.exclusive(str(self.path)):
            if not self.entries(reload=True):
                self._fs.rmtree()

    def write(self, video_id: str, arrays: dict[str, np.ndarray], attrs: dict, **put_options) -> None:
        """Write one video's arrays, then its attrs, then (last) its index line: :meth:`put` (which takes
        the same arguments) then :meth:`commit`."""
        self.commit(self.put(video_id, arrays, attrs, **put_options))

    def put(
        self,
        video_id: str,
        arrays: dict[str, np.ndarray],
        attrs: dict,
        summary: dict | None = None,
        chunks: dict[str, tuple] | None = None,
        uncompressed: tuple[str, ...] = (),
    ) -> dict:
        """Write one video's arrays and attrs and return its index entry, not yet committed: until
        :meth:`commit` records it the video is absent, and putting it again rewrites the same bytes (a
        distributed writer's retried task is harmless). Needs no write lock: the committer holds it.

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
            g.create_array(name, data=arr, chunks=ch, overwrite=True, **kw)
        # one metadata write: attrs.update() would rewrite the group's zarr.json once per key
        g.update_attributes({**attrs, "id": video_id, "complete": True})
        return {"id": video_id, "key": key, "status": "done", **(summary or {})}

    def commit(self, entry: dict) -> None:
        """Record a :meth:`put` video's entry (stamped with the time now): from here on it is present."""
        self._append({**entry, "time": time.time()})

    def fail(self, video_id: str, reason: str, **info) -> None:
        self._append({"id": video_id, "status": "failed", "reason": reason, "time": time.time(), **info})

    # ---------------------------------------------------------------- read
    def has(self, video_id: str) -> bool:
        e = self.get(video_id)
        return e is not None and e["status"] == "done"

    def read(self, video_id: str) -> tuple[dict[str, Any], dict]:
        """(name -> zarr array, attrs) of a done video; arrays load on indexing (``arr[:]``)."""
        e = self.get(video_id)
        if e is None or e["status"] != "done":
            why = f" (failed: {e['reason']})" if e else ""
            raise VtcError(f"video '{video_id}' is not in {self.path}{why}")
        g = self._group["videos"][e["key"]]
        return {name: arr for name, arr in g.arrays()}, dict(g.attrs)

    def load(self, video_id: str, names: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """Like :meth:`read` but the arrays are read now (all, or ``names``), and a damaged chunk (a
        truncated or deleted file) is a one-line VtcError naming the video and the array."""
        arrays, attrs = self.read(video_id)
        out = {}
        for name in names if names is not None else tuple(arrays):
            if name not in arrays:
                continue
            try:
                out[name] = np.asarray(arrays[name][...])
            except Exception as e:  # zarr raises ValueError, OSError or codec errors on damaged chunks
                raise VtcError(
                    f"video '{video_id}' in {self.path}: array '{name}' is damaged ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''})"
                ) from None
        return out, attrs

    def nbytes(self) -> int:
        return self._fs.nbytes()


@contextlib.contextmanager
def _removed_on_error(fs, made: bool) -> Iterator[None]:
    """On an error inside, remove the store if this call created its directory and ``zarr.json`` does not
    exist yet: a failure before the store existed leaves nothing behind; one after keeps it for a resume."""
    try:
        yield
    except BaseException:
        if made and not fs.exists("zarr.json"):
            fs.rmtree()
        raise


def non_finite(arrays: dict) -> str | None:
    """Why these arrays (numpy or CPU torch) must not be stored or used: NaN or ±inf values; else None.
    One NaN feature silently changes every reducer's token counts and every answer downstream."""
    for name, a in arrays.items():
        if a is None:
            continue
        finite = np.isfinite(np.asarray(a))
        if not finite.all():
            return f"non-finite {name} ({finite.size - int(finite.sum())} of {finite.size} values NaN or inf)"
    return None
