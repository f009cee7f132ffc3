"""Shared fixtures: tiny random checkpoints (built once per session), synthetic videos, stores."""

from __future__ import annotations

import numpy as np
import pytest

from vtc.encoders.tiny import build_tiny_checkpoints


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """{"siglip": dir, "llava_ov": dir}: saved with save_pretrained, loaded by the code under test."""
    return build_tiny_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="session")
def frames_by_video():
    """Deterministic 384x384 frames for two 'videos' (4 and 3 frames: odd T on purpose)."""
    rng = np.random.default_rng(0)
    return {
        "vid_a": rng.integers(0, 256, (4, 384, 384, 3), dtype=np.uint8),
        "vid_b": rng.integers(0, 256, (3, 384, 384, 3), dtype=np.uint8),
    }


@pytest.fixture(scope="session")
def feature_store(tmp_path_factory, tiny_ckpt, frames_by_video):
    """A float32 feature store written straight from frames with the tiny LLaVA-OV tower (no decoding)."""
    from vtc.cache import Store
    from vtc.encoders.vision import VisionEncoder

    enc = VisionEncoder(str(tiny_ckpt["llava_ov"]))
    path = tmp_path_factory.mktemp("stores") / "feats.zarr"
    st = Store.create(
        path, "features", {"encoder": enc.identity(), "sampling": {"frames": 4}, "storage_dtype": "float32"}
    )
    for vid, frames in frames_by_video.items():
        f = enc.encode(frames).numpy()
        st.write(
            vid,
            {"features": f, "frame_indices": np.arange(len(f)), "timestamps": np.arange(len(f)) / 8.0},
            attrs={"source": vid},
            summary={"n_frames": len(f)},
        )
    return path


def write_videomme_questions(path, rows):
    """rows: (videoID, duration, answer) -> a Video-MME-format questions.jsonl at path."""
    from vtc.eval.tasks import videomme_row, write_jsonl

    options = ["A. a", "B. b", "C. c", "D. d"]
    return write_jsonl(
        path,
        [
            videomme_row(vid, f"{i:03d}-1", dur, "What is shown?", options, answer)
            for i, (vid, dur, answer) in enumerate(rows)
        ],
    )
