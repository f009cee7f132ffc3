"""Tiny deterministic test videos (PyAV) whose frames can be told apart after decoding, plus bad files.

Frame k of ``make_video`` has a flat background band in its bottom quarter coding k in two channels
(R = 16 + 14 * (k % 16), G = 16 + 14 * (k // 16 % 16), B = 128), read back by ``frame_ids`` at any
resolution; levels 14 apart survive MPEG-4 / H.264 and YUV 4:2:0 -> RGB with a wide margin. Above it,
pattern "moving" has a mid-grey field with a white square moved k pixels right; pattern "noise" has
seeded per-frame noise (texture for encoders). Ids wrap at 256 frames.

Codecs both decord and PyAV read here: "mpeg4" (default; .mp4, .avi, .mkv) and "libx264" (.mp4, .mkv).
"""

from __future__ import annotations

import os
import signal
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

_LEVELS, _STEP, _BASE = 16, 14, 16
_X264 = {"preset": "ultrafast", "threads": "1"}  # one thread: the same bytes on every machine


def frame_image(k: int, size=(64, 48), pattern: str = "moving") -> np.ndarray:
    """uint8 [H, W, 3] RGB: frame ``k`` exactly as ``make_video`` encodes it."""
    w, h = size
    band = h - h // 4
    img = np.empty((h, w, 3), np.uint8)
    if pattern == "moving":
        img[:band] = 96
        side = max(4, h // 4)
        x = k % max(1, w - side)
        img[2 : 2 + side, x : x + side] = 255
    elif pattern == "noise":
        img[:band] = np.random.default_rng(k).integers(0, 256, (band, w, 3), dtype=np.uint8)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; valid: moving, noise")
    img[band:] = (_BASE + _STEP * (k % _LEVELS), _BASE + _STEP * (k // _LEVELS % _LEVELS), 128)
    return img


def frame_ids(frames: np.ndarray) -> np.ndarray:
    """int64 [F]: which ``make_video`` frame (mod 256) each decoded RGB frame [F, H, W, 3] is."""
    frames = np.asarray(frames)
    h = frames.shape[1]
    m = h // 16  # the middle of the band, away from its edge (chroma and resize bleed)
    rows = frames[:, h - h // 4 + m : h - m, :, :2].astype(np.float64)
    lo, hi = (np.rint((np.median(rows[..., c], axis=(1, 2)) - _BASE) / _STEP) for c in (0, 1))
    return (np.clip(lo, 0, _LEVELS - 1) + _LEVELS * np.clip(hi, 0, _LEVELS - 1)).astype(np.int64)


def make_video(
    path,
    n_frames: int = 16,
    size: tuple[int, int] = (64, 48),
    fps: float = 8.0,
    codec: str = "mpeg4",
    pattern: str = "moving",
    faststart: bool = False,
) -> Path:
    """Write ``n_frames`` frames of ``frame_image`` at ``fps``; container from the suffix. -> path.

    ``size`` is (W, H), both even (YUV 4:2:0). ``faststart`` puts an .mp4's index (moov) first, so that
    cutting the tail leaves a file that still opens (and whose header overstates its frames).
    """
    import av

    path = Path(path)
    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"size must be even for yuv420p, got {size}")
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as container:
        rate = Fraction(str(fps)).limit_denominator(1001)
        stream = container.add_stream(codec, rate=rate, options=_X264 if codec == "libx264" else {})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec != "libx264":
            stream.bit_rate = 2_000_000  # PyAV's default leaves MPEG-4 too coarse to tell frames apart
        for k in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(k, size, pattern), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def make_no_frames(path) -> Path:
    """An .avi with a video stream and no frames (an .mp4 without samples has no stream at all)."""
    import av

    path = Path(path)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


def make_audio_only(path, seconds: float = 0.5) -> Path:
    """AAC audio, no video stream (format from the suffix; .mp4 / .m4a / .mkv)."""
    import av

    path = Path(path)
    rate = 16000
    fmt = "mp4" if path.suffix in (".mp4", ".m4a", ".mov") else None
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def make_corrupt(path, n_bytes: int = 4096, seed: int = 0) -> Path:
    """Random bytes (seeded) under a video name."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    return path


def make_truncated(src, dst, keep_fraction: float = 0.5) -> Path:
    """The first ``keep_fraction`` of ``src``'s bytes (an .mp4 without faststart then cannot open)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def make_empty(path) -> Path:
    """A zero-byte file."""
    path = Path(path)
    path.write_bytes(b"")
    return path


# --- decode hooks for DecodeWorker tests (resolved by import path in the worker process) -------------


def hang_forever(path, policy, backend="decord", size=None):
    """A decoder that never returns."""
    while True:
        time.sleep(60)


def faulty_decode(path, policy, backend="decord", size=None):
    """decode_video, except that a file named *hang* hangs and one named *crash* segfaults the process."""
    name = Path(path).name
    if "hang" in name:
        hang_forever(path, policy)
    if "crash" in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    from vtc.video import decode_video

    return decode_video(path, policy, backend=backend, size=size)
