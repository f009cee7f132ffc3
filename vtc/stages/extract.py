"""Stage 1: decode videos, sample frames, run the vision tower, write features to a zarr store."""

from __future__ import annotations

import os
import time
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
    done = st.done()
    todo = []
    for vid, path in items:
        e = done.get(vid)
        if e is not None and e.get("fingerprint") == _safe_fingerprint(path, fingerprint):
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
    from vtc.video import fingerprint

    extra = {}
    if opt.save_attention:
        feats, scores = encoder.encode(result.frames, batch_size=opt.batch_size, attention=True)
        extra["attention"] = scores.numpy().astype(np.float32)
    else:
        feats = encoder.encode(result.frames, batch_size=opt.batch_size)
    feats = feats.numpy().astype(np.dtype(opt.storage_dtype))
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


def record_failure(st: Store, summary: ExtractSummary, vid: str, path, reason: str, bar=None) -> None:
    st.fail(vid, reason, source=str(path))
    summary.failed.append({"id": vid, "path": str(path), "reason": reason})
    if bar is not None:
        bar.note(f"[yellow]skipped[/] {vid}: {reason}")
        bar.advance(1, 0)


def extract(
    opt: ExtractOptions, quiet: bool = False, console=None, _decode_fn: str | None = None
) -> ExtractSummary:
    """Extract features of every input video into ``store``; videos already done are skipped.

    Returns a summary; a video that cannot be decoded is recorded in the store's index with its reason
    and the run goes on. ``_decode_fn`` ("module:function") replaces the decoder in the worker: a test
    hook for decoders that hang or crash.
    """
    from vtc.video import DecodePool, VideoError

    p = plan(opt)
    st, summary = p.store, p.summary
    if not p.todo:
        return summary
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
    ):
        p.encoder.load()
        for (vid, path), (_, result) in zip(p.todo, worker.imap([q for _, q in p.todo]), strict=True):
            rec = str(result) if isinstance(result, VideoError) else encode(p.encoder, result, path, opt)
            if isinstance(rec, str):
                record_failure(st, summary, vid, path, rec, bar)
                continue
            st.commit(rec.put(st, vid))
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
