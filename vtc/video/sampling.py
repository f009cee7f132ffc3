"""Which frames of a video to keep: uniform N frames (LLaVA-OneVision) or R frames per second, capped."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingPolicy:
    """How frames are chosen from a video; exactly one of ``frames`` / ``fps`` is set.

    - ``frames=N``: N indices ``np.linspace(0, total - 1, N, dtype=int)``, exactly as LLaVA-OneVision's
      ``load_video`` in lmms-eval does. With ``total < N`` indices repeat (e.g. total=3, N=5 ->
      [0, 0, 1, 1, 2]); they are kept, so every video yields N frames, as the model was run.
    - ``fps=R``: one frame every 1/R seconds of video time, t = 0, 1/R, 2/R, ... < duration, frame
      ``round(t * video_fps)`` (halves round up); more than ``max_frames`` of them -> ``max_frames``
      uniform over the whole video instead (the ``frames`` rule with N = max_frames).

    ``max_frames`` only matters with ``fps``. ``SamplingPolicy(fps=2.0)`` is an error (``frames``
    defaults to 32): pass ``frames=None``.
    """

    frames: int | None = 32
    fps: float | None = None
    max_frames: int = 64

    def __post_init__(self):
        if (self.frames is None) == (self.fps is None):
            raise ValueError(
                f"set exactly one of frames or fps (got frames={self.frames}, fps={self.fps}); "
                "to sample by time pass frames=None"
            )
        if self.frames is not None and (not _is_int(self.frames) or self.frames < 1):
            raise ValueError(f"frames must be a positive integer, got {self.frames!r}")
        if self.fps is not None and not _is_positive_number(self.fps):
            raise ValueError(f"fps must be a positive number, got {self.fps!r}")
        if not _is_int(self.max_frames) or self.max_frames < 1:
            raise ValueError(f"max_frames must be a positive integer, got {self.max_frames!r}")

    def indices(self, total_frames: int, video_fps: float) -> np.ndarray:
        """Frame indices to keep: int64 [F], sorted, each in [0, total_frames); F = 0 iff total_frames = 0.

        ``video_fps`` is only used by fps mode (to turn seconds into frame numbers).
        """
        total = int(total_frames)
        if total <= 0:
            return np.zeros(0, dtype=np.int64)
        if self.frames is not None:
            return uniform_indices(total, self.frames)
        if not (video_fps > 0 and math.isfinite(video_fps)):
            raise ValueError(f"fps sampling needs the video's frame rate, got {video_fps!r}")
        # t_k = k / R < duration = total / video_fps  <=>  k < total * R / video_fps
        n = math.ceil(total * self.fps / video_fps - 1e-9)
        if n > self.max_frames:
            return uniform_indices(total, self.max_frames)
        k = np.arange(max(n, 1), dtype=np.float64)
        idx = np.floor(k * video_fps / self.fps + 0.5).astype(np.int64)
        return np.minimum(idx, total - 1)

    def to_dict(self) -> dict:
        """JSON-able and minimal: only the fields the mode uses, so equal policies compare equal."""
        if self.frames is not None:
            return {"frames": int(self.frames)}
        return {"fps": float(self.fps), "max_frames": int(self.max_frames)}

    @classmethod
    def from_dict(cls, d: dict) -> SamplingPolicy:
        """Inverse of :meth:`to_dict`; a missing ``frames`` means fps mode (not the default 32)."""
        unknown = set(d) - {"frames", "fps", "max_frames"}
        if unknown:
            raise ValueError(f"unknown sampling keys: {', '.join(sorted(unknown))}")
        kw = {"frames": d.get("frames"), "fps": d.get("fps")}
        if "max_frames" in d:
            kw["max_frames"] = d["max_frames"]
        return cls(**kw)


def uniform_indices(total: int, n: int) -> np.ndarray:
    """int64 [n]: ``np.linspace(0, total - 1, n, dtype=int)``, LLaVA-OneVision's uniform sampling."""
    return np.linspace(0, total - 1, n, dtype=int).astype(np.int64)


def _is_positive_number(x) -> bool:
    ok = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
    return ok and math.isfinite(x) and x > 0


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
