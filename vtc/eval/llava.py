"""LLaVA-OneVision on precomputed features: projector → pooling → plan, then ``generate``.

``LlavaOnevisionModel.get_video_features`` does tower → projector → bilinear pooling → one newline.
vtc stores the tower's output, so evaluation starts at the projector, applies the model's own pooling
when the reduction's plan indexes the pooled grid, then the plan (weighted sums of projected tokens,
and the model's ``image_newline`` for markers and the end-of-video newline). The result goes to
``generate`` as ``mm_encoder_outputs`` with exactly as many ``<video>`` placeholders as rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vtc.cache import Store
from vtc.errors import VtcError

# The Qwen2 chat format LLaVA-OV was trained with (LLaVA-NeXT's "qwen_1_5" conversation template,
# which lmms-eval's llava_onevision model uses): system prompt, then the video before the question.
SYSTEM_PROMPT = "You are a helpful assistant."


class TokenSource:
    """Looks a video up in a token store (and its parent feature store) or directly in a feature store.

    A feature store is evaluated as if compressed with ``none`` (stock LLaVA-OV tokens).
    """

    def __init__(self, path: str | Path):
        st = Store.open(path)
        if st.kind == "tokens":
            self.tokens = st
            parent = Path(st.meta["identity"]["parent"]["path"])
            if not parent.exists():
                raise VtcError(f"token store {path} names parent feature store {parent}, which is missing")
            self.features = Store.open(parent, kind="features")
            if self.features.meta["identity_hash"] != st.meta["identity"]["parent"]["identity_hash"]:
                raise VtcError(f"feature store {parent} is not the one {path} was compressed from")
            self.method = st.meta["identity"]["method"]
        elif st.kind == "features":
            from vtc.reducers import get_reducer, reducer_config

            self.tokens, self.features = None, st
            self._none = get_reducer("none")
            self.method = reducer_config(self._none)
        else:
            raise VtcError(f"{path} is a {st.kind} store; evaluation needs a token or feature store")
        enc = self.features.meta["identity"]["encoder"]
        self.grid, self.dim = tuple(enc["grid"]), enc["dim"]

    def ids(self) -> list[str]:
        src = self.tokens if self.tokens is not None else self.features
        return sorted(src.done())

    def resolve(self, visual) -> str:
        """A task's visual (a video id, or a path whose stem is the id) -> the id in the store."""
        s = str(visual)
        for cand in (s, Path(s).stem, Path(s).name):
            if self.features.has(cand) and (self.tokens is None or self.tokens.has(cand)):
                return cand
        raise VtcError(f"video '{s}' is not in the store (looked up as '{Path(s).stem}'); extract it first")

    def load(self, video_id: str):
        """(features float tensor [T, H*W, C], Reduction) of one video."""
        import numpy as np
        import torch

        arrays, _ = self.features.read(video_id)
        x = torch.from_numpy(np.asarray(arrays["features"][...]))
        if self.tokens is None:
            red = self._none(x, self.grid)
        else:
            from vtc.stages.compress import load_reduction

            red = load_reduction(self.tokens, video_id)
        return x, red


def check_compatible(model, grid: tuple[int, int], dim: int) -> None:
    vc = model.config.vision_config
    side = vc.image_size // vc.patch_size
    if tuple(grid) != (side, side) or dim != vc.hidden_size:
        raise VtcError(
            f"the store's features are {grid[0]}x{grid[1]}x{dim} but the model's tower gives "
            f"{side}x{side}x{vc.hidden_size}: extract with this model's tower"
        )


def embed_video(model, features, reduction):
    """features [T, H*W, C] (tower output) + plan -> [N, D] LLM-space tokens, N = reduction.n_llm_tokens."""
    import torch

    inner = model.model
    dtype = inner.multi_modal_projector.linear_1.weight.dtype
    device = inner.multi_modal_projector.linear_1.weight.device
    with torch.inference_mode():
        proj = inner.multi_modal_projector(features.to(device, dtype))  # [T, H*W, D]
        base = inner.apply_pooling(proj) if reduction.base == "pooled" else proj
        base = base.reshape(-1, base.shape[-1])
        expected = reduction.base_grid[0] * reduction.base_grid[1] * reduction.base_grid[2]
        if base.shape[0] != expected:
            raise VtcError(f"plan indexes {expected} base tokens but the model made {base.shape[0]}")
        return reduction.apply(base, inner.image_newline.to(dtype))


def prompt_ids(tokenizer, question: str, n_video_tokens: int, video_token_id: int):
    """Token ids of the chat prompt with exactly ``n_video_tokens`` <video> placeholders."""
    import torch

    head = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
    tail = f"\n{question}<|im_end|>\n<|im_start|>assistant\n"
    a = tokenizer(head, add_special_tokens=False).input_ids
    b = tokenizer(tail, add_special_tokens=False).input_ids
    return torch.tensor([a + [video_token_id] * n_video_tokens + b])


@dataclass
class LlavaRunner:
    """A loaded LLaVA-OV checkpoint that answers questions about stored videos."""

    model_id: str
    device: str = "cpu"
    dtype: str = "fp32"

    def __post_init__(self):
        import torch
        from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration
        from transformers.utils import logging as hf_logging

        from vtc.encoders.vision import DTYPES

        hf_logging.disable_progress_bar()
        try:
            self.model = (
                LlavaOnevisionForConditionalGeneration.from_pretrained(
                    self.model_id, dtype=getattr(torch, DTYPES[self.dtype])
                )
                .to(self.device)
                .eval()
            )
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        except OSError as e:
            raise VtcError(
                f"cannot load LLaVA-OneVision '{self.model_id}': {str(e).splitlines()[0]}"
            ) from None
        self.video_token_id = self.model.config.video_token_id

    def inputs(self, features, reduction, question: str) -> dict:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        emb = embed_video(self.model, features, reduction)
        ids = prompt_ids(self.tokenizer, question, emb.shape[0], self.video_token_id).to(self.device)
        return {
            "input_ids": ids,
            "attention_mask": ids.new_ones(ids.shape),
            "mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=emb[None])},
        }

    def generate(self, features, reduction, question: str, max_new_tokens: int = 16) -> str:
        import torch

        inputs = self.inputs(features, reduction, question)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
