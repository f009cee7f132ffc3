"""Model families: what differs between video LLMs once their visual features are stored.

A family is one record here; its code lives in one vision module (``vtc.encoders``: preprocessing and
tower) and one LLM module (``vtc.eval``: how stored tokens become LLM inputs, prompt, position ids).
Reducers never see a family: they get ``[T, H*W, C]`` and the grid. The family decides

* the grid a reducer's ``grid="pooled"`` means. LLaVA-OneVision pools its projected 27x27 SigLIP grid
  2x2 (bilinear) before the LLM, so its stock tokens live on the pooled grid. Qwen2.5-VL merges 2x2
  patches inside its tower, and vtc stores the merger's output, so its stock tokens are the stored
  grid itself: there ``pooled`` is the native grid (and an explicit ``--set grid=pooled`` is refused);
* whether separator rows reach the LLM. LLaVA-OV has a learned ``image_newline`` embedding, which vtc's
  plans use for the end-of-video newline and for row markers (DynTok). Qwen2.5-VL has none: its video
  is ``<|vision_start|>`` + one ``<|video_pad|>`` per token + ``<|vision_end|>``, so a plan's marker and
  newline rows are dropped (`Reduction.without_separators`) and every count is of visual tokens only;
* the stock token count a reduction is compared with.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

from vtc.errors import VtcError


@dataclass(frozen=True)
class Family:
    name: str  # as `vtc demo --family` spells it
    label: str  # for messages
    sources: tuple[str, ...]  # config model_types / feature-store encoder sources of the family
    stock_base: str  # the base grid the model's own tokens live on: "pooled" or "native"
    separators: bool  # marker and newline rows reach the LLM (a learned separator embedding)
    runner: str  # "module:Class" of the LLM side (vtc.eval)
    example: str  # a real checkpoint id

    def stock_per_step(self, grid) -> int:
        """Visual tokens the stock model sends per stored step (a frame, or Qwen's pair) of ``grid`` (H, W)."""
        H, W = int(grid[0]), int(grid[1])
        return -(-H // 2) * -(-W // 2) if self.stock_base == "pooled" else H * W

    def stock_tokens(self, n_steps: int, grid) -> int:
        """Tokens the stock model sends for a video of ``n_steps`` stored steps on ``grid`` (H, W)."""
        return n_steps * self.stock_per_step(grid) + (1 if self.separators else 0)

    def adapt(self, reducer, explicit: dict | None = None):
        """The reducer as it runs on this family's features: ``grid="pooled"`` becomes the family's stock
        base. A ``grid=pooled`` the user set on a family without pooling is a one-line error."""
        if self.stock_base == "pooled" or getattr(reducer, "grid", None) != "pooled":
            return reducer
        if explicit and str(explicit.get("grid", "")) == "pooled":
            raise VtcError(
                f"{self.label} has no pooling step: its stock tokens are the stored merger grid, "
                "so use grid=native (the default on these features)"
            )
        return dataclasses.replace(reducer, grid="native")

    def for_llm(self, reduction):
        """The reduction's rows that reach this family's LLM (separators dropped where it has none)."""
        return reduction if self.separators else reduction.without_separators()

    def runner_class(self):
        module, _, cls = self.runner.partition(":")
        return getattr(importlib.import_module(module), cls)


LLAVA_ONEVISION = Family(
    name="llava-onevision",
    label="LLaVA-OneVision",
    sources=("llava_onevision", "siglip", "siglip_vision_model"),
    stock_base="pooled",
    separators=True,
    runner="vtc.eval.llava:LlavaRunner",
    example="llava-hf/llava-onevision-qwen2-7b-ov-hf",
)
QWEN2_5_VL = Family(
    name="qwen2.5-vl",
    label="Qwen2.5-VL",
    sources=("qwen2_5_vl",),
    stock_base="native",
    separators=False,
    runner="vtc.eval.qwen2_5_vl:QwenRunner",
    example="Qwen/Qwen2.5-VL-7B-Instruct",
)
FAMILIES = {f.name: f for f in (LLAVA_ONEVISION, QWEN2_5_VL)}


def family_of(source: str) -> Family:
    """The family of a config's model_type or a feature store's encoder source."""
    for f in FAMILIES.values():
        if source in f.sources:
            return f
    known = ", ".join(s for f in FAMILIES.values() for s in f.sources)
    raise VtcError(f"no model family for '{source}'; vtc knows {known}")


def encoder_family(encoder: dict) -> Family:
    """The family of a feature store's encoder identity (its source; a store without one was written
    before vtc knew another family than LLaVA-OV)."""
    source = encoder.get("source")
    return LLAVA_ONEVISION if source is None else family_of(str(source))


def store_family(features_store) -> Family:
    """The family a feature store's features belong to."""
    return encoder_family(features_store.meta["identity"]["encoder"])


def frames_per_step(encoder: dict) -> int:
    """Sampled frames per stored step of an encoder identity: Qwen2.5-VL's temporal patch (2), else 1."""
    return int(encoder.get("preprocess", {}).get("temporal_patch", 1))


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise VtcError(f"unknown family '{name}'; valid: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def stock_tokens_of(store, video_id: str) -> int:
    """The stock model's token count for one done video of a feature or token store: what a reduction is
    compared with. A token store records it per video (older LLaVA-OV stores: from the parent's grid)."""
    entry = store.done()[video_id]
    if store.kind == "tokens":
        if entry.get("n_stock_tokens") is not None:
            return int(entry["n_stock_tokens"])
        grid = store.meta.get("parent_identity", {}).get("encoder", {}).get("grid") or (27, 27)
        return LLAVA_ONEVISION.stock_tokens(entry["n_frames"], grid)
    encoder = store.meta["identity"]["encoder"]
    family = encoder_family(encoder)
    if encoder.get("grid"):
        return family.stock_tokens(entry["n_frames"], encoder["grid"])
    # a per-video grid (Qwen2.5-VL): n_frames counts sampled frames, a stored step is a temporal patch
    steps = -(-int(entry["n_frames"]) // frames_per_step(encoder))
    return family.stock_tokens(steps, store.read(video_id)[1]["grid"])
