"""Qwen2.5-VL's LLM inputs from stored tokens: the 3-D multimodal RoPE (M-RoPE) position ids of the kept ones.

Qwen2.5-VL gives each ``<|video_pad|>`` token a (t, h, w) position and each text token one position
repeated on the three axes (``Qwen2_5_VLModel.get_rope_index``). vtc keeps, for every stored token, its
cell on the merger's grid (a plan's ``pos``: the largest-weight source for a merged token), so the ids of
a reduced video are those the full video's tokens have at the kept cells, not a re-count of a denser grid,
and the text after the video starts where it would after the full video.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mrope_position_ids(
    n_before: int,
    pos: Tensor,
    grid: tuple[int, int, int],
    n_after: int,
    seconds_per_step: float,
    tokens_per_second: float,
) -> Tensor:
    """[3, n_before + N + n_after] int64 position ids of: text, N video tokens, text.

    pos: int [N, 3] the video tokens' (t, h, w) cells on the merged grid ``grid`` = (T', h, w); a
    temporal step is ``seconds_per_step`` seconds (temporal patch / sampling fps, the processor's
    ``second_per_grid_ts``). As ``get_rope_index``: with s = n_before, a token at (t, h, w) gets
    (s + int(t * tokens_per_second * seconds_per_step), s + h, s + w); the text after starts at
    s + max(h, w) of the grid (what transformers counts the video as, whatever the time ids reach).
    """
    s = int(n_before)
    pos = pos.long()
    # the interval in float32, as transformers gets it (a float32 tensor of seconds times an int)
    interval = torch.tensor(seconds_per_step, dtype=torch.float32) * tokens_per_second
    t = (torch.arange(grid[0]) * interval).long()[pos[:, 0]] + s
    video = torch.stack([t, pos[:, 1] + s, pos[:, 2] + s])
    after = s + max(int(grid[1]), int(grid[2])) + torch.arange(n_after)
    return torch.cat([torch.arange(s).expand(3, -1), video, after.expand(3, -1)], dim=1)
