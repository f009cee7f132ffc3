"""M-RoPE position ids of kept Qwen2.5-VL video tokens against transformers' get_rope_index on the full video."""

from __future__ import annotations

import pytest
import torch

from vtc.eval.qwen2_5_vl import mrope_position_ids
from vtc.reducers import get_reducer


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vtc.encoders.tiny import build_tiny_qwen2_5_vl

    path = build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen") / "m")
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()


def stock_ids(model, n_before: int, grid: tuple[int, int, int], n_after: int, seconds: float) -> torch.Tensor:
    """The ids the stock path gives a text + full video + text sequence: [3, S]."""
    n_video = grid[0] * grid[1] * grid[2]
    ids = torch.cat(
        [
            torch.full((n_before,), 50),
            torch.full((n_video,), model.config.video_token_id),
            torch.full((n_after,), 60),
        ]
    )[None]
    types = (ids == model.config.video_token_id).int() * 2  # 0 text, 2 video
    m = model.config.vision_config.spatial_merge_size
    thw = torch.tensor([[grid[0], grid[1] * m, grid[2] * m]])
    pos, _ = model.model.get_rope_index(
        ids, types, video_grid_thw=thw, second_per_grid_ts=torch.tensor([seconds])
    )
    return pos[:, 0]


def cells(grid):
    T, h, w = grid
    flat = torch.arange(T * h * w)
    return torch.stack([flat // (h * w), (flat // w) % h, flat % w], dim=1)


@pytest.mark.parametrize("grid,seconds", [((4, 3, 5), 1.0), ((3, 6, 2), 0.5), ((5, 4, 4), 2 / 3)])
def test_the_full_video_gets_the_stock_ids(qwen, grid, seconds):
    tps = qwen.config.vision_config.tokens_per_second
    ref = stock_ids(qwen, 7, grid, 9, seconds)
    assert torch.equal(mrope_position_ids(7, cells(grid), grid, 9, seconds, tps), ref)


@pytest.mark.parametrize("method,params", [("random", {"ratio": 0.3}), ("dyntok", {"threshold": 0.2})])
def test_kept_tokens_keep_their_ids_in_the_full_sequence(qwen, method, params):
    """A reduced video's ids are the stock ids of its kept cells (a merged token: its largest-weight
    source), and the text after it keeps the ids it has after the full video."""
    grid, seconds, n_before, n_after = (4, 6, 8), 1.0, 5, 6
    tps = qwen.config.vision_config.tokens_per_second
    T, h, w = grid
    x = torch.randn(T, h * w, 16, generator=torch.Generator().manual_seed(0))
    red = get_reducer(method, grid="native", **params)(x, (h, w))
    visual = red.kind == 0
    pos = red.pos[visual]
    assert visual.sum() < T * h * w  # something was reduced
    got = mrope_position_ids(n_before, pos, grid, n_after, seconds, tps)
    ref = stock_ids(qwen, n_before, grid, n_after, seconds)
    flat = (pos[:, 0].long() * h + pos[:, 1].long()) * w + pos[:, 2].long()
    keep = torch.cat([torch.arange(n_before), n_before + flat, n_before + T * h * w + torch.arange(n_after)])
    assert torch.equal(got, ref[:, keep])
