"""Decode a video into sampled, resized RGB frames with decord or PyAV, trusting only frames that decode.

A container's frame count (its header, or the packet index decord builds) can overstate what decodes: a
truncated upload, a broken tail. Sampling over a count that is too large asks for frames that do not
exist, so when a fetch fails (or comes back short) the frames that really decode are counted, the
indices re-sampled over that count, and it is reported as ``DecodedVideo.total_frames``. "Really decode"
means the decodable prefix: frames up to the first decode error (a frame cut mid-packet that FFmpeg
conceals still counts). PyAV decodes straight through, so it always knows the real count; decord seeks,
and fetches the last frame along with the sampled ones to check its count. On a damaged file decord's
own re-reads are not deterministic, so PyAV decodes that file instead (the result says backend="pyav").

Both backends give the same indices for the same file and policy, and the same pixels on the test videos
and the sample media (both convert YUV -> RGB with FFmpeg's swscale). Frames are resized with PIL bicubic
to ``size`` = (W, H), aspect not kept, as LLaVA-OneVision's processor does, here in the decoder so that
small frames cross process boundaries. Timestamps are ``index / fps`` for both backends, as lmms-eval's
LLaVA-OneVision computes frame times; ``duration`` is ``total_frames / fps``.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vtc.errors import VtcError
from vtc.video.sampling import SamplingPolicy

BACKENDS = ("decord", "pyav")
_BACKEND_MODULE = {"decord": "decord", "pyav": "av"}
_DEFAULT_FPS = 25.0  # FFmpeg's own guess when a stream declares no usable rate
_FETCH_CHUNK = 16  # decord frames per get_batch call: bounds full-resolution memory (16 x 4K ~ 400 MB)
_MIB = 1 << 20
_RETRIES = 4  # re-reads of a damaged file before giving up (each shrinks the frame count)
_threads = 0  # decoder threads per video; 0: FFmpeg picks (about one per core). See set_threads.


def set_threads(n: int) -> None:
    """Decoder threads each decode may use in this process (0: FFmpeg's choice, about one per core).

    N decode processes each using every core oversubscribe the machine (and starve the tower), so
    DecodePool gives each of its processes ``cores // N``. The frames are the same whatever the count.
    """
    global _threads
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"decoder threads must be a non-negative integer, got {n!r}")
    _threads = n


class VideoError(VtcError):
    """One-line, human-readable reason a video cannot be used (corrupt, empty, audio-only, missing, timeout...)."""


@dataclass
class DecodedVideo:
    """Sampled frames of one video and what is known about it."""

    frames: np.ndarray  # uint8 [F, H, W, 3] RGB, resized to `size` if given
    frame_indices: np.ndarray  # int64 [F], into the frames that decode (repeats allowed, see SamplingPolicy)
    timestamps: np.ndarray  # float64 [F], seconds: frame_indices / fps
    total_frames: int  # number of frames that ACTUALLY decode (not the container header)
    fps: float  # the stream's average frame rate
    duration: float  # seconds: total_frames / fps
    backend: str  # "decord" or "pyav"


def list_backends() -> list[str]:
    """Backends whose library imports here, in order of preference."""
    out = []
    for name in BACKENDS:
        try:
            importlib.import_module(_BACKEND_MODULE[name])
        except Exception:  # a broken native library raises more than ImportError
            continue
        out.append(name)
    return out


def fingerprint(path) -> dict:
    """Cheap identity of a file: {"size": bytes, "mtime_ns": int, "head_sha1": hex}.

    ``head_sha1`` hashes the first and the last MiB (the whole file when it is at most 2 MiB), so an
    edit at either end, where container headers and indexes live, changes it. Raises OSError.
    """
    p = Path(path)
    st = p.stat()
    h = hashlib.sha1()
    with open(p, "rb") as f:
        if st.st_size <= 2 * _MIB:
            h.update(f.read())
        else:
            h.update(f.read(_MIB))
            f.seek(-_MIB, os.SEEK_END)
            h.update(f.read(_MIB))
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns), "head_sha1": h.hexdigest()}


def decode_video(
    path,
    policy: SamplingPolicy,
    backend: str = "decord",
    size: tuple[int, int] | None = (384, 384),
) -> DecodedVideo:
    """Decode the frames ``policy`` picks from ``path``, resized to ``size`` = (W, H) (None: native size).

    Raises VideoError, with a one-line reason, for any file that cannot be used; ValueError for a bad
    ``backend`` or ``size`` (caller errors, not input errors).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown decoder backend {backend!r}; valid: {', '.join(BACKENDS)}")
    size = _check_size(size)
    p = _check_file(path)
    try:
        mod = importlib.import_module(_BACKEND_MODULE[backend])
    except Exception as e:
        raise ValueError(f"decoder backend {backend!r} is not available here ({e})") from None
    try:
        if backend == "decord":
            return _decode_decord(mod, p, policy, size)
        return _decode_pyav(mod, p, policy, size)
    except VideoError:
        raise
    except Exception as e:  # any other failure of the native decoder is still a property of the file
        raise VideoError(f"cannot decode: {one_line(e)}") from e


# --- checks shared by both backends -------------------------------------------------------------------


def _check_size(size):
    if size is None:
        return None
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height) or None, got {size!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return w, h


def _check_file(path) -> Path:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise VideoError("file not found") from None
    except OSError as e:
        raise VideoError(f"cannot read file: {e.strerror or e}") from None
    if not p.is_file():
        raise VideoError("not a regular file")
    if st.st_size == 0:
        raise VideoError("empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise VideoError("cannot read file: permission denied")
    return p


_OPEN_FAILED = "cannot open as a video (corrupt, truncated or not a media file)"
_NO_FRAMES = "video stream decodes to 0 frames"


def _no_video_stream(has_audio: bool) -> VideoError:
    return VideoError("no video stream (audio-only file)" if has_audio else "no video stream")


def one_line(e: BaseException, limit: int = 200) -> str:
    """A native library's error as one short line: first non-empty line, without decord's
    ``[hh:mm:ss] /src/file.cc:123:`` prefixes and ``Check failed: ...`` noise."""
    text = str(e).strip() or type(e).__name__
    line = next((s.strip() for s in text.splitlines() if s.strip()), text)
    line = re.sub(r"(\[\d\d:\d\d:\d\d\]\s*\S+:\d+:\s*)+", "", line).strip()
    m = re.search(r"Check failed: .*\(-?\d+ vs\. -?\d+\)\s*(.*)$", line)
    if m and m.group(1):
        line = m.group(1)
    line = line or type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _sane_fps(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return _DEFAULT_FPS
    return x if math.isfinite(x) and x > 0 else _DEFAULT_FPS


def _resize(frame: np.ndarray, size) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size[1], size[0], 3], PIL bicubic (LLaVA-OneVision's resampling)."""
    if size is None or (frame.shape[1], frame.shape[0]) == size:
        return np.ascontiguousarray(frame)
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC))


def _result(frames: list, idx: np.ndarray, total: int, fps: float, backend: str) -> DecodedVideo:
    return DecodedVideo(
        frames=np.stack(frames).astype(np.uint8, copy=False),
        frame_indices=idx.astype(np.int64),
        timestamps=idx.astype(np.float64) / fps,
        total_frames=int(total),
        fps=float(fps),
        duration=total / fps,
        backend=backend,
    )


def _probe_no_frames(path: Path) -> VideoError | None:
    """VideoError(0 frames) if PyAV opens the file and its video stream decodes no frame, else None."""
    try:
        import av

        with av.open(str(path)) as c:
            stream = _pyav_stream(c)
            for packet in c.demux(stream):
                if packet.decode():
                    return None
    except VideoError as e:
        return e
    except Exception:
        return None
    return VideoError(_NO_FRAMES)


def _has_stream(path: Path, kind: str) -> bool | None:
    """Does the container have a ``kind`` ("audio"/"video") stream? None if PyAV cannot tell."""
    try:
        import av

        with av.open(str(path)) as c:
            return any(s.type == kind for s in c.streams)
    except Exception:
        return None


# --- decord --------------------------------------------------------------------------------------------


def _decode_decord(decord, path: Path, policy: SamplingPolicy, size) -> DecodedVideo:
    vr = _decord_open(decord, path)
    claimed = len(vr)
    fps = _sane_fps(vr.get_avg_fps())
    idx = policy.indices(claimed, fps)
    frames = _decord_fetch(vr, idx, claimed, size)
    if frames is not None:
        return _result(frames, idx, claimed, fps, "decord")
    del vr
    # A damaged file: decord's count (its packet index) is more than decodes. decord's own straight-through
    # count is not reliable here: its decoder thread runs ahead, meets the damage and fails the read at a
    # random earlier frame (the same truncated H.264 file reads 2, 4 or 5 of its 5 frames). PyAV's
    # sequential decode is deterministic, so it decodes the file; the result says backend="pyav".
    try:
        import av
    except Exception:
        return _decode_decord_damaged(decord, path, policy, size, fps)
    return _decode_pyav(av, path, policy, size)


def _decode_decord_damaged(decord, path: Path, policy: SamplingPolicy, size, fps: float) -> DecodedVideo:
    """Without PyAV: count by reading straight through with decord, re-sample, fetch.

    decord's reads of a damaged file stop at a random frame near (or well before) the damage, so the count
    is the best of three reads, and only two short re-reads in a row shrink it.
    """
    total = max(_decord_count(decord, path) for _ in range(3))
    short_reads: list[int] = []
    for _ in range(2 * _RETRIES):
        if total == 0:
            raise VideoError(_NO_FRAMES)
        idx = policy.indices(total, fps)
        frames = _decord_fetch(_decord_open(decord, path), idx, total, size)
        if frames is None:  # seeking can fail where reading straight through works
            frames, n_read = _decord_sequential(decord, path, idx, size)
        if frames is not None:
            return _result(frames, idx, total, fps, "decord")
        short_reads.append(n_read)
        if len(short_reads) == 2:
            total, short_reads = max(short_reads), []
    raise VideoError(f"cannot decode: the decodable frame count changes on every read ({total} last)")


def _decord_open(decord, path: Path):
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=_threads)
    except Exception as e:
        msg = str(e)
        if "cannot find video stream" in msg:
            raise _no_video_stream(bool(_has_stream(path, "audio"))) from None
        if "Invalid frame count" in msg:
            raise VideoError(_NO_FRAMES) from None
        if isinstance(e, RuntimeError) and msg.startswith("Error reading"):  # decord gives no reason
            raise VideoError(_OPEN_FAILED) from None
        # e.g. "Cannot create buffer source" for a stream without one decodable frame: say that if PyAV can
        raise _probe_no_frames(path) or VideoError(f"cannot decode: {one_line(e)}") from None


def _to_numpy(x) -> np.ndarray:
    """decord's output through whatever bridge is set (native NDArray, torch, ...) -> numpy."""
    if hasattr(x, "asnumpy"):
        return x.asnumpy()
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)


def _decord_fetch(vr, idx: np.ndarray, total: int, size) -> list | None:
    """Frames at ``idx`` (resized), or None if decord fails or returns fewer frames than asked.

    The last frame is fetched too (and dropped): if it decodes, ``total`` is real. Fetching each distinct
    index once, in chunks, keeps seeks and full-resolution memory down.
    """
    want = np.unique(np.append(idx, total - 1))
    got = {}
    try:
        for i in range(0, len(want), _FETCH_CHUNK):
            chunk = want[i : i + _FETCH_CHUNK]
            batch = _to_numpy(vr.get_batch(chunk.tolist()))
            if batch.ndim != 4 or batch.shape[0] != len(chunk) or batch.shape[-1] != 3:
                return None
            for j, frame in zip(chunk.tolist(), batch, strict=True):
                got[j] = _resize(frame, size)
    except Exception:
        return None
    return [got[int(i)] for i in idx]


def _decord_count(decord, path: Path) -> int:
    """Frames that decode reading straight through, up to the first error."""
    vr = _decord_open(decord, path)
    n = 0
    try:
        while True:
            vr.next()
            n += 1
    except Exception:  # StopIteration at the end, DECORDError at a broken frame
        pass
    return n


def _decord_sequential(decord, path: Path, idx: np.ndarray, size) -> tuple[list | None, int]:
    """(frames at ``idx``, resized; None if reading stopped early, frames read) reading straight through."""
    vr = _decord_open(decord, path)
    wanted = set(idx.tolist())
    got = {}
    n = 0
    try:
        for n in range(int(idx.max()) + 1):
            frame = vr.next()
            if n in wanted:
                got[n] = _resize(_to_numpy(frame), size)
    except Exception:
        return None, n
    return [got[int(i)] for i in idx], n + 1


# --- PyAV ----------------------------------------------------------------------------------------------


def _decode_pyav(av, path: Path, policy: SamplingPolicy, size) -> DecodedVideo:
    with _pyav_open(av, path) as container:
        stream = _pyav_stream(container)
        fps = _sane_fps(stream.average_rate or stream.guessed_rate)
        # The demuxer's packet count: cheap (no decoding) and the count decord starts from too.
        claimed = _pyav_count_packets(container, stream)
    idx = policy.indices(claimed, fps)
    frames, total = _pyav_collect(av, path, idx, size)
    if total == 0:
        raise VideoError(_NO_FRAMES)
    if frames is not None and total == claimed:
        return _result(frames, idx, total, fps, "pyav")
    # Fewer (or more) frames decode than packets: re-sample over the real count and decode again.
    for _ in range(_RETRIES):
        if total == 0:
            raise VideoError(_NO_FRAMES)
        idx = policy.indices(total, fps)
        frames, n = _pyav_collect(av, path, idx, size, stop_after=int(idx.max()))
        if frames is not None:
            return _result(frames, idx, total, fps, "pyav")
        total = n  # a re-read stopped earlier (never seen: PyAV is deterministic; but never loop forever)
    raise VideoError(f"cannot decode: the decodable frame count changes on every read ({total} last)")


def _pyav_open(av, path: Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except Exception:
        raise VideoError(_OPEN_FAILED) from None


def _pyav_stream(container):
    """The first video stream that is not an attached picture (cover art is a one-frame 'video')."""
    import av

    cover = av.stream.Disposition.attached_pic
    for s in container.streams.video:
        if not (s.disposition & cover):
            return s
    raise _no_video_stream(bool(container.streams.audio))


def _pyav_count_packets(container, stream) -> int:
    n = 0
    try:
        for packet in container.demux(stream):
            if packet.size:  # the last packet demux yields is an empty flush packet
                n += 1
    except Exception:  # a damaged tail: what was read so far
        pass
    return n


def _pyav_collect(av, path: Path, idx: np.ndarray, size, stop_after: int | None = None):
    """Decode straight through: (frames at ``idx`` resized, or None if one is missing; frames decoded).

    Decoding ends at the first error (the decodable prefix) or, with ``stop_after``, after that frame.
    """
    wanted = set(idx.tolist())
    got = {}
    n = 0
    with _pyav_open(av, path) as container:
        stream = _pyav_stream(container)
        if _threads:
            stream.codec_context.thread_count = _threads
        try:
            for packet in container.demux(stream):  # ends with an empty packet, which flushes the decoder
                for frame in packet.decode():
                    if n in wanted:
                        got[n] = _resize(frame.to_ndarray(format="rgb24"), size)
                    n += 1
                    if stop_after is not None and n > stop_after:
                        return [got[int(i)] for i in idx], n
        except av.error.FFmpegError:
            pass
    if any(int(i) not in got for i in idx):
        return None, n
    return [got[int(i)] for i in idx], n
