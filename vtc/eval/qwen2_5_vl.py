"""Qwen2.5-VL on stored tokens: the family's runner, and the 3-D multimodal RoPE (M-RoPE) ids of kept tokens.

Qwen2.5-VL gives each ``<|video_pad|>`` token a (t, h, w) position and each text token one position
repeated on the three axes (``Qwen2_5_VLModel.get_rope_index``). vtc keeps, for every stored token, its
cell on the merger's grid (a plan's ``pos``: the largest-weight source for a merged token), so the ids of
a reduced video are those the full video's tokens have at the kept cells, not a re-count of a denser grid,
and the text after the video starts where it would after the full video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtc.errors import VtcError
from vtc.eval.runner import Runner, chat_ids


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


@dataclass
class QwenRunner(Runner):
    """A loaded Qwen2.5-VL checkpoint that answers questions about stored videos.

    The store holds the merger's tokens, already in the LLM's space: a plan's visual rows are weighted
    sums of them (the identity for ``none``), placed on the ``<|video_pad|>`` placeholders between
    ``<|vision_start|>`` and ``<|vision_end|>``, with the M-RoPE ids of their cells (`mrope_position_ids`).
    A temporal step lasts temporal_patch / fps seconds, fps being the video's sampling rate (qwen-vl-utils'
    frames / duration; 2 frames per second, the processor's default, where the store has no duration).
    """

    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"
    family_name = "qwen2.5-vl"

    def configure(self) -> None:
        cfg = self.model.config
        self.wrap = ([cfg.vision_start_token_id], [cfg.vision_end_token_id])
        self.temporal_patch = int(cfg.vision_config.temporal_patch_size)
        self.tokens_per_second = float(cfg.vision_config.tokens_per_second)

    def check_features(self, source) -> None:
        dim = int(self.model.config.vision_config.out_hidden_size)
        if int(source.dim) != dim:
            raise VtcError(
                f"the store's tokens are {source.dim}-dim but this model's merger gives {dim}: extract with "
                "this checkpoint's tower"
            )

    def video_output(self, emb):
        return (emb,)  # Qwen2.5-VL concatenates a sequence of per-video token tensors

    def conversation(self, features, reduction, turns, grad: bool = False):
        red = self.family.for_llm(reduction)
        T, h, w = red.base_grid
        if red.base != "native" or features.ndim != 3 or tuple(features.shape[:2]) != (T, h * w):
            raise VtcError(
                f"the plan indexes a {red.base} {T}x{h}x{w} grid; the stored tokens are {list(features.shape)}"
            )
        weight = self.model.lm_head.weight
        base = features.reshape(T * h * w, -1).to(weight.device, weight.dtype)
        emb = red.apply(base, base.new_zeros(base.shape[1]))  # no separator row reaches this LLM
        ids, labels = chat_ids(
            self.tokenizer, turns, emb.shape[0], self.video_token_id, wrap=self.wrap, sep=""
        )
        start = ids.index(self.video_token_id)
        seconds = self.temporal_patch / (red.fps or 2.0)
        pos = mrope_position_ids(
            start, red.pos, (T, h, w), len(ids) - start - emb.shape[0], seconds, self.tokens_per_second
        )
        return emb, ids, labels, pos
