"""LLaVA-OneVision on precomputed features: projector → pooling → plan, then ``generate``.

``LlavaOnevisionModel.get_video_features`` does tower → projector → bilinear pooling → one newline.
vtc stores the tower's output, so evaluation starts at the projector, applies the model's own pooling
when the reduction's plan indexes the pooled grid, then the plan (weighted sums of projected tokens,
and the model's ``image_newline`` for markers and the end-of-video newline). The result goes to
``generate`` as ``mm_encoder_outputs`` with exactly as many ``<video>`` placeholders as rows.

``LlavaRunner`` is the family's `vtc.eval.runner.Runner`: the decode loop, batching and online pruning
are shared with the other families.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtc.adapters.base import TOKEN_MODULES
from vtc.errors import VtcError
from vtc.eval.runner import Runner, chat_ids


def check_compatible(model, grid: tuple[int, int], dim: int) -> None:
    vc = model.config.vision_config
    side = vc.image_size // vc.patch_size
    if tuple(grid) != (side, side) or dim != vc.hidden_size:
        raise VtcError(
            f"the store's features are {grid[0]}x{grid[1]}x{dim} but the model's tower gives "
            f"{side}x{side}x{vc.hidden_size}: extract with this model's tower"
        )


def embed_video(model, features, reduction, grad: bool = False):
    """features [T, H*W, C] (tower output) + plan -> [N, D] LLM-space tokens, N = reduction.n_llm_tokens
    (or what a token module makes of them: vq-attn's official form gives max(T, K) visual tokens).
    ``grad``: keep the autograd graph (training the projector), else run under inference mode."""
    from contextlib import nullcontext

    import torch

    inner = model.model
    dtype = inner.multi_modal_projector.linear_1.weight.dtype
    device = inner.multi_modal_projector.linear_1.weight.device
    with nullcontext() if grad else torch.inference_mode():
        proj = inner.multi_modal_projector(features.to(device, dtype))  # [T, H*W, D]
        base = inner.apply_pooling(proj) if reduction.base == "pooled" else proj
        base = base.reshape(-1, base.shape[-1])
        expected = reduction.base_grid[0] * reduction.base_grid[1] * reduction.base_grid[2]
        if base.shape[0] != expected:
            raise VtcError(f"plan indexes {expected} base tokens but the model made {base.shape[0]}")
        marker = getattr(inner, "vtc_marker", None)  # a learned DynTok marker (vtc.adapters.marker)
        out = reduction.apply(
            base, inner.image_newline.to(dtype), None if marker is None else marker.to(dtype)
        )
        for name in TOKEN_MODULES:  # trained modules on the reduced tokens (vq-attn, cross-dynamics)
            module = getattr(inner, name, None)
            if module is not None:
                out = module(out, reduction)
        return out


@dataclass
class LlavaRunner(Runner):
    """A loaded LLaVA-OV checkpoint that answers questions about stored videos."""

    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    family_name = "llava-onevision"

    def check_features(self, source) -> None:
        check_compatible(self.model, source.grid, source.dim)

    def conversation(self, features, reduction, turns, grad: bool = False):
        import torch

        emb = embed_video(self.model, features, reduction, grad=grad)
        ids, labels = chat_ids(self.tokenizer, turns, emb.shape[0], self.video_token_id)
        return emb, ids, labels, torch.arange(len(ids))[None]
