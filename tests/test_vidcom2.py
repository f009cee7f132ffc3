"""`vidcom2` (VidCom2, arXiv 2505.14454) against the official code's choices, on a frame that stands out,
and its default retained share (25%)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vtc.reducers import get_reducer

ORACLE = json.loads((Path(__file__).parent / "data" / "vidcom2_official.json").read_text())


def oracle_input(seed: int) -> torch.Tensor:
    T, N, C = ORACLE["T"], ORACLE["N"], ORACLE["C"]
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, C, generator=g)
    return torch.stack([base + (0.2 + 0.1 * (t % 5)) * torch.randn(N, C, generator=g) for t in range(T)])


def test_keeps_what_the_official_code_keeps():
    """tests/data/vidcom2_official.json: the kept indices of xuyang-liu16/VidCom2's LLaVA-OV path (commit
    0312a662), run unchanged on 16 seeded inputs outside the repository."""
    r = get_reducer("vidcom2", scale=str(ORACLE["base_scale"]), grid="native")
    for seed in range(16):
        red = r(oracle_input(seed), (14, 14))  # native 14x14: the official code's 196 tokens per frame
        assert red.src.tolist() == ORACLE["kept"][str(seed)], seed


def test_a_frame_unlike_the_video_keeps_more():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(196, 32, generator=g)
    x = torch.stack([base + 0.1 * torch.randn(196, 32, generator=g) for _ in range(8)])
    x[5] = torch.randn(196, 32, generator=g)  # a cut: frame 5 shares nothing with the rest
    red = get_reducer("vidcom2", grid="native")(x, (14, 14))
    per_frame = torch.bincount(red.src // 196, minlength=8).tolist()
    assert per_frame[5] == max(per_frame) and per_frame[5] > 49 > min(per_frame), per_frame
    assert abs(sum(per_frame) - 0.25 * 8 * 196) <= 8, per_frame  # the shares average to the base 25%


def test_default_keeps_a_quarter_of_32_frames():
    x = torch.randn(32, 729, 16, generator=torch.Generator().manual_seed(1))
    red = get_reducer("vidcom2")(x, (27, 27))
    assert red.base_grid == (32, 14, 14)
    assert abs(red.n_visual() - 0.25 * 32 * 196) <= 32, red.n_visual()  # 1,568 +- one per frame's rounding
    assert torch.equal(red.weight, torch.ones_like(red.weight))  # pruning: kept tokens unchanged
