"""Stage 1: decode videos, sample frames, run the vision tower, write features to a zarr store."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vtc.cache import Store, non_finite
from vtc.errors import VtcError
from vtc.stages.inputs import resolve_inputs
from vtc.stages.progress import progress_bar

STORAGE_DTYPES = ("float16", "float32")  # zarr has no bfloat16


@dataclass
class ExtractSummary:
    store: str
    done: int = 0
    skipped: int = 0  # already in the store from an earlier run
    failed: list[dict] = field(default_factory=list)  # {"id", "path", "reason"}
    warnings: list[str] = field(default_factory=list)  # inputs that gave no video, and the like
    frames: int = 0
    seconds: float = 0.0
    workers: int = 1  # decode processes

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "frames_per_s": round(self.frames_per_s, 2)}


def features_identity(encoder, policy, storage_dtype: str, save_attention: bool = False) -> dict:
    ident = {"encoder": encoder.identity(), "sampling": policy.to_dict(), "storage_dtype": storage_dtype}
    if save_attention:  # only when on, so stores without it keep the identity they always had
        ident["attention"] = "stored layer, softmax over keys, mean over heads and queries"
    return ident


@dataclass
class ExtractOptions:
    """What `extract` is asked to do (the CLI builds it from its options)."""

    inputs: list[str]
    store: str | Path
    model: str | None = None
    frames: int | None = 32
    fps: float | None = None
    max_frames: int = 64
    backend: str = "decord"
    device: str = "cpu"
    dtype: str = "fp32"
    batch_size: int = 16
    storage_dtype: str = "float16"
    layer: int | None = None
    save_attention: bool = False
    workers: int | None = None  # decode processes (None: cores - 1, at least 1)
    min_pixels: int | None = None  # Qwen2.5-VL's resize bounds (None: its processor's video defaults)
    max_pixels: int | None = None
    timeout: float | None = 120.0


@dataclass
class Plan:
    """What a run will do, whichever engine runs it: the store opened (created if new) under this run's
    identity, the encoder (not loaded yet), and the videos still to extract."""

    store: Store
    encoder: object
    policy: object
    workers: int
    todo: list[tuple[str, Path]]
    summary: ExtractSummary


def plan(opt: ExtractOptions) -> Plan:
    """Check the options, open the store and list the videos to do (done videos with the same file
    fingerprint are skipped). Raises a one-line VtcError for bad options or inputs."""
    from vtc.encoders.vision import make_encoder
    from vtc.video import SamplingPolicy, fingerprint, list_backends

    if opt.storage_dtype not in STORAGE_DTYPES:
        raise VtcError(f"unknown storage dtype '{opt.storage_dtype}'; valid: {', '.join(STORAGE_DTYPES)}")
    if opt.backend not in list_backends():
        raise VtcError(
            f"decoder backend '{opt.backend}' is not available here; available: {', '.join(list_backends())}"
        )
    try:
        policy = SamplingPolicy(
            frames=None if opt.fps else opt.frames, fps=opt.fps, max_frames=opt.max_frames
        )
    except ValueError as e:
        raise VtcError(str(e)) from None
    workers = opt.workers if opt.workers is not None else max(1, (os.cpu_count() or 1) - 1)
    if workers < 1:
        raise VtcError(f"--workers must be >= 1, got {workers}")
    warnings: list[str] = []
    items = resolve_inputs(opt.inputs, warnings)
    if not items:
        raise VtcError("no input videos (give files, directories, globs or a .csv/.jsonl manifest)")

    encoder = make_encoder(
        opt.model,
        device=opt.device,
        dtype=opt.dtype,
        layer=opt.layer,
        pixels=(opt.min_pixels, opt.max_pixels),
    )
    st = Store.create(
        opt.store,
        "features",
        features_identity(encoder, policy, opt.storage_dtype, opt.save_attention),
        provenance={"stage": "extract"},
    )
    summary = ExtractSummary(store=str(opt.store), warnings=warnings, workers=workers)
    known = st.get_many(vid for vid, _ in items)  # the inputs' entries: what the list costs, not the store
    todo = []
    for vid, path in items:
        e = known.get(vid)
        if (
            e is not None
            and e["status"] == "done"
            and e.get("fingerprint") == _safe_fingerprint(path, fingerprint)
        ):
            summary.skipped += 1
        else:
            todo.append((vid, path))
    return Plan(st, encoder, policy, workers, todo, summary)


@dataclass
class Record:
    """One video's output, ready for :meth:`Store.put`."""

    arrays: dict
    attrs: dict
    summary: dict
    chunks: dict
    uncompressed: tuple = ("features",)

    @property
    def n_frames(self) -> int:
        return int(self.summary["n_frames"])

    def put(self, st: Store, video_id: str) -> dict:
        return st.put(video_id, self.arrays, self.attrs, self.summary, self.chunks, self.uncompressed)


def encode(encoder, result, path, opt: ExtractOptions) -> Record | str:
    """Run the (loaded) tower on one decoded video: its :class:`Record`, or why it cannot be stored."""
    return to_record(encoder, result, path, opt, _tower(encoder, result.frames, opt))


def _tower(encoder, frames: np.ndarray, opt: ExtractOptions) -> tuple:
    """(features, attention scores or None) as numpy, for ``frames`` of one or several videos."""
    if opt.save_attention:
        feats, scores = encoder.encode(frames, batch_size=opt.batch_size, attention=True)
        return feats.numpy(), scores.numpy()
    return encoder.encode(frames, batch_size=opt.batch_size).numpy(), None


def encode_stream(encoder, items, opt: ExtractOptions):
    """Encode a stream of ``(key, path, DecodedVideo | VideoError)`` and yield ``(key, path, Record |
    reason)`` in the same order, running the tower on full batches of ``opt.batch_size`` frames that may
    span videos (a video's last partial batch waits for the next video's frames instead of running
    short). Encoders whose frames are not independent (Qwen2.5-VL) run one video at a time. The store
    does not depend on where batches fall: on CPU the tower gives the same bytes per frame whatever the
    batch (checked in the tests); GPU kernels chosen by batch size may change the last bits."""
    from vtc.video import VideoError

    if not getattr(encoder, "frames_independent", False):
        for key, path, result in items:
            yield (
                key,
                path,
                (str(result) if isinstance(result, VideoError) else encode(encoder, result, path, opt)),
            )
        return
    line: deque[_Pending] = deque()  # in input order; the head leaves once all its frames are encoded
    queued = 0  # frames in line not yet encoded

    def run(n: int) -> None:
        nonlocal queued
        pieces, want = [], n
        for v in line:
            take = min(want, len(v.result.frames) - v.next) if v.result is not None else 0
            if take:
                pieces.append((v, v.next, v.next + take))
                want -= take
            if not want:
                break
        feats, scores = _tower(encoder, np.concatenate([v.result.frames[a:b] for v, a, b in pieces]), opt)
        at = 0
        for v, a, b in pieces:
            v.out.append((feats[at : at + b - a], None if scores is None else scores[at : at + b - a]))
            v.next, at = b, at + b - a
        queued -= n

    def ready():
        while line and (line[0].result is None or line[0].next == len(line[0].result.frames)):
            v = line.popleft()
            if v.result is None:
                yield v.key, v.path, v.reason
                continue
            feats = np.concatenate([f for f, _ in v.out])
            scores = np.concatenate([s for _, s in v.out]) if opt.save_attention else None
            yield v.key, v.path, to_record(encoder, v.result, v.path, opt, (feats, scores))

    for key, path, result in items:
        if isinstance(result, VideoError):
            line.append(_Pending(key, path, None, str(result)))
        else:
            line.append(_Pending(key, path, result))
            queued += len(result.frames)
        while queued >= opt.batch_size:
            run(opt.batch_size)
        yield from ready()
    if queued:
        run(queued)
    yield from ready()


@dataclass
class _Pending:
    key: object
    path: object
    result: object  # DecodedVideo, or None for a video that failed to decode
    reason: str = ""
    next: int = 0  # frames handed to the tower so far
    out: list = field(default_factory=list)  # (features, scores) per batch piece


def to_record(encoder, result, path, opt: ExtractOptions, encoded: tuple) -> Record | str:
    """One video's :class:`Record` from its tower output ``(features, scores or None)``, or why it
    cannot be stored."""
    from vtc.video import fingerprint

    feats, scores = encoded
    extra = {} if scores is None else {"attention": scores.astype(np.float32)}
    feats = feats.astype(np.dtype(opt.storage_dtype))
    bad = non_finite({"features": feats, **extra})  # after the cast: float16 overflows to inf
    if bad:
        return bad + " from the tower; check the checkpoint"
    fp = fingerprint(path)
    _, hw, c = feats.shape
    n = len(result.frame_indices)  # frames sampled (Qwen2.5-VL's rows are pairs of them)
    source = str(Path(path).resolve())
    return Record(
        arrays={
            "features": feats,
            "frame_indices": result.frame_indices.astype(np.int64),
            "timestamps": result.timestamps.astype(np.float64),
            **extra,
        },
        attrs={
            "source": source,
            "fingerprint": fp,
            "decoder": result.backend,
            "total_frames": int(result.total_frames),
            "video_fps": float(result.fps),
            "duration": float(result.duration),
            "grid": list(encoder.video_grid(result.frames.shape)),
        },
        summary={"n_frames": int(n), "source": source, "fingerprint": fp},
        chunks={"features": (1, hw, c)},
    )


def record_failure(st: Store, summary: ExtractSummary, vid: str, path, reason: str) -> None:
    st.fail(vid, reason, source=str(path))
    summary.failed.append({"id": vid, "path": str(path), "reason": reason})


class _Writer:
    """Runs store writes (a video's put + commit, a failure's line) on a thread of its own, in the order
    given, so writing one video overlaps the tower on the next. At most ``depth`` wait; an error in the
    thread is raised in the caller at its next submit or at the end. Leaving (an interrupt too) finishes
    what is queued: those videos are encoded already."""

    def __init__(self, depth: int = 2):
        self._jobs: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="vtc-write", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:
                try:
                    job[0](*job[1:])
                except BaseException as e:  # raised in the caller's thread
                    self._error = e

    def submit(self, fn, *args) -> None:
        self._check()
        self._jobs.put((fn, *args))

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._jobs.put(None)
        self._thread.join()
        if exc_type is None:
            self._check()


def extract(
    opt: ExtractOptions, quiet: bool = False, console=None, _decode_fn: str | None = None
) -> ExtractSummary:
    """Extract features of every input video into ``store``; videos already done are skipped.

    Returns a summary; a video that cannot be decoded is recorded in the store's index with its reason
    and the run goes on. ``_decode_fn`` ("module:function") replaces the decoder in the worker: a test
    hook for decoders that hang or crash.
    """
    from vtc.video import DecodePool

    p = plan(opt)
    st, summary = p.store, p.summary
    if not p.todo:
        return summary
    paths = [q for _, q in p.todo]
    t0 = time.perf_counter()
    with (
        st.discarded_on_error(),  # a checkpoint that fails to load leaves no empty store behind
        st.writing(),
        DecodePool(
            p.workers,
            p.policy,
            backend=opt.backend,
            size=p.encoder.decode_size,
            timeout=opt.timeout,
            _decode_fn=_decode_fn,
        ) as worker,
        progress_bar("extract", len(p.todo), "frames", quiet=quiet, console=console) as bar,
        _Writer() as writer,
    ):
        p.encoder.load()
        decoded = ((vid, path, r) for (vid, path), (_, r) in zip(p.todo, worker.imap(paths), strict=True))
        for vid, path, rec in encode_stream(p.encoder, decoded, opt):
            if isinstance(rec, str):
                writer.submit(record_failure, st, summary, vid, path, rec)
                bar.note(f"[yellow]skipped[/] {vid}: {rec}")
                bar.advance(1, 0)
                continue
            writer.submit(lambda rec=rec, vid=vid: st.commit(rec.put(st, vid)))
            summary.done += 1
            summary.frames += rec.n_frames
            bar.advance(1, rec.n_frames)
    summary.seconds = time.perf_counter() - t0
    return summary


def _safe_fingerprint(path, fingerprint) -> dict | None:
    try:
        return fingerprint(path)
    except OSError:
        return None
