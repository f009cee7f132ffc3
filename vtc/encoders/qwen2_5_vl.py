"""Qwen2.5-VL's vision side, written out as its processor and tower compute it (no torchvision).

Frames are resized as ``Qwen2VLVideoProcessor`` resizes them (`smart_resize`: both sides multiples of
28 = patch 14 x merge 2, the area within [min_pixels, max_pixels], the aspect kept; PIL bicubic), scaled
by 1/255 and normalised with CLIP's mean and std. Pairs of frames form one temporal patch (an odd
frame count repeats the last frame, as the processor does), each 14x14 patch of the pair one row of
``pixel_values_videos`` in the processor's order: temporal step, then 2x2 merge blocks in raster
order, then the four patches of a block. The tower (window attention, then the 2x2 spatial merger) turns
that into one token per merge block: [T/2 * (H/28) * (W/28), D], D the LLM width.

vtc stores the merger's output, on its (t, h, w) grid [T/2, (H/28) * (W/28), D]: it is what the LLM
reads in place of ``<|video_pad|>``, one token per grid cell, so a reducer's plan over that grid maps
one to one onto LLM tokens and their 3-D M-RoPE positions. Before the merger, the 4 patches of a cell
would have to be merged again after reduction through a non-linear MLP, as LLaVA-OV's projector
forces vtc to store pre-projector features and re-project at evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 128 * 28 * 28,
    max_pixels: int = 768 * 28 * 28,
) -> tuple[int, int]:
    """(height, width) resized to multiples of ``factor``, the area within [min_pixels, max_pixels], the
    aspect ratio kept as closely as possible: the processor's rule (defaults: its video limits)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be below 200, got {max(height, width) / min(height, width):.0f}")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


@dataclass(frozen=True)
class QwenPreprocess:
    """Qwen2.5-VL's video preprocessing (see the module docstring); the store records ``to_dict()``."""

    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    patch: int = 14
    merge: int = 2
    temporal_patch: int = 2
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def to_dict(self) -> dict:
        return {
            "resize": "smart_resize, PIL bicubic",
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "patch": self.patch,
            "merge": self.merge,
            "temporal_patch": self.temporal_patch,
            "mean": list(self.mean),
            "std": list(self.std),
            "rescale": "1/255",
        }

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) frames of a height x width video are resized to."""
        return smart_resize(height, width, self.patch * self.merge, self.min_pixels, self.max_pixels)

    def resize(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [F, H, W, 3] -> uint8 [F, H', W', 3] at `size` (PIL bicubic, as the processor)."""
        from PIL import Image

        h, w = self.size(frames.shape[1], frames.shape[2])
        if (h, w) == frames.shape[1:3]:
            return frames
        return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in frames])

    def __call__(self, frames: np.ndarray):
        """uint8 [F, H, W, 3] (resized) -> (pixel_values [N, 3*tp*14*14] float32, grid_thw [3] int64), the
        rows ``Qwen2_5_VLModel.get_video_features`` takes; grid_thw = (ceil(F / tp), H/14, W/14)."""
        import torch

        F_, H, W, _ = frames.shape
        p, m, tp = self.patch, self.merge, self.temporal_patch
        if H % (p * m) or W % (p * m):
            raise ValueError(f"frames are {H}x{W}, not multiples of {p * m}: resize them first")
        if F_ % tp:  # the processor repeats the last frame up to a whole temporal patch
            frames = np.concatenate([frames, np.repeat(frames[-1:], tp - F_ % tp, axis=0)])
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # [F, 3, H, W]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        x = (x - mean) / std
        t, gh, gw = x.shape[0] // tp, H // p, W // p
        x = x.reshape(t, tp, 3, gh // m, m, p, gw // m, m, p)
        # -> (t, block row, block col, row in block, col in block, channel, frame in pair, patch y, patch x)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return x.reshape(t * gh * gw, 3 * tp * p * p), torch.tensor([t, gh, gw])


class QwenVisionTower:
    """Qwen2.5-VL's vision tower and merger from a checkpoint (a Hugging Face id or a local directory):
    `encode(frames)` -> the merger's tokens [T/2, (H/28) * (W/28), D] on their (t, h, w) grid."""

    source = "qwen2_5_vl"
    grid = None  # per video: it follows each video's resolution
    decode_size = None  # frames are decoded at their own size and resized here (`smart_resize`)
    frames_independent = False  # frames are paired in time, and each video has its own size

    def __init__(
        self,
        model_id: str,
        device: str = "cpu",
        dtype: str = "fp32",
        layer: int | None = None,
        pixels: tuple[int | None, int | None] = (None, None),
    ):
        from vtc.encoders.vision import DTYPES, _config_hash, load_config
        from vtc.errors import VtcError

        if dtype not in DTYPES:
            raise VtcError(f"unknown dtype '{dtype}'; valid: {', '.join(DTYPES)}")
        if layer is not None:
            raise VtcError("Qwen2.5-VL features are its merger's output: --layer does not apply")
        config = load_config(model_id)
        if config.model_type != "qwen2_5_vl":
            raise VtcError(f"'{model_id}' is a {config.model_type} model, not Qwen2.5-VL")
        vc = config.vision_config
        self.model_id, self.device, self.dtype = model_id, device, dtype
        defaults = QwenPreprocess()
        lo = int(pixels[0]) if pixels[0] is not None else defaults.min_pixels
        hi = int(pixels[1]) if pixels[1] is not None else defaults.max_pixels
        cell = (vc.patch_size * vc.spatial_merge_size) ** 2
        if not cell <= lo <= hi:
            raise VtcError(
                f"need {cell} <= --min-pixels <= --max-pixels (one {cell}-pixel cell at least), got {lo} and {hi}"
            )
        self.preprocess = QwenPreprocess(
            min_pixels=lo,
            max_pixels=hi,
            patch=vc.patch_size,
            merge=vc.spatial_merge_size,
            temporal_patch=vc.temporal_patch_size,
        )
        self.dim = vc.out_hidden_size
        self.revision = getattr(config, "_commit_hash", None)
        self.config_hash = _config_hash(vc)
        self._visual = None

    def identity(self) -> dict:
        """What makes features comparable: recorded in the store, checked on append."""
        from vtc.encoders.vision import encoder_identity

        return encoder_identity(self, "merger", None)  # the grid follows each video

    def video_grid(self, frame_shape) -> tuple[int, int]:
        """The merged (h, w) grid of a video decoded at frame_shape [F, H, W, 3]."""
        h, w = self.preprocess.size(int(frame_shape[1]), int(frame_shape[2]))
        m = self.preprocess.patch * self.preprocess.merge
        return h // m, w // m

    def load(self):
        if self._visual is None:
            import torch
            from transformers import Qwen2_5_VLForConditionalGeneration
            from transformers.utils import logging as hf_logging

            from vtc.encoders.vision import DTYPES, load_error

            hf_logging.disable_progress_bar()

            try:
                full = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                    self.model_id, dtype=getattr(torch, DTYPES[self.dtype])
                )
            except Exception as e:
                raise load_error(self.model_id, e) from None
            self._visual = full.model.visual.to(self.device).eval()
            del full  # only the tower is kept; the LLM's weights are freed
        return self._visual

    def encode(self, frames: np.ndarray, batch_size: int = 16, attention: bool = False):
        """uint8 frames [F, H, W, 3] at any size -> float32 CPU tensor [T', h*w, D] on the `video_grid`,
        T' = ceil(F / 2) temporal steps (the tower sees the whole video at once: batch_size is unused).

        With ``attention=True`` returns ``(features, scores)``: scores [T', h*w] = the attention each merged
        cell receives in the tower's last block (softmax over the keys of its attention span: a temporal
        step in a full-attention block, as the last one is in the released checkpoints; mean over heads and
        queries; summed over the cell's 4 patches, so a step's scores sum to 1), the counterpart of the
        SigLIP scores VisionZip and HoliTom read on LLaVA-OV."""
        import torch

        visual = self.load()
        pixels, thw = self.preprocess(self.preprocess.resize(frames))
        captured: list = []
        hook = None
        if attention:
            hook = visual.blocks[-1].attn.register_forward_pre_hook(
                lambda mod, args, kwargs: captured.append(_received_attention(mod, args, kwargs)),
                with_kwargs=True,
            )
        try:
            with torch.inference_mode():
                out = visual(
                    pixels.to(self.device, next(visual.parameters()).dtype),
                    grid_thw=thw[None].to(self.device),
                )
        finally:
            if hook is not None:
                hook.remove()
        t, gh, gw = thw.tolist()
        m = self.preprocess.merge
        feats = out.pooler_output.float().cpu().reshape(t, (gh // m) * (gw // m), -1)
        if not attention:
            return feats
        cells = captured[0].reshape(-1, m * m).sum(1)  # merge units, in the tower's window order
        return feats, cells[torch.argsort(window_order(visual, thw))].reshape(t, -1)


def window_order(visual, thw):
    """The tower's window order of the merge units of a video of grid ``thw`` (t, H/14, W/14): unit
    ``window_order[i]`` (raster index over (t, h, w) merged cells) is the i-th the blocks see."""
    from transformers.vision_utils import get_vision_window_index

    index, _ = get_vision_window_index(
        thw[None],
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )
    return index.cpu()


def _received_attention(attn, args, kwargs):
    """[S] float32: per patch, the softmax attention it receives from the queries of its span (the
    ``cu_seqlens`` chunks the block attends within), mean over heads and queries; in the block's order."""
    import sys

    import torch

    h = args[0] if args else kwargs["hidden_states"]
    cu = kwargs["cu_seqlens"].tolist()
    cos, sin = kwargs["position_embeddings"]
    S = h.shape[0]
    q, k, _ = attn.qkv(h).reshape(S, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision  # the block's own rotation
    q, k = rotary(q, k, cos, sin)
    out = []
    for a, b in zip(cu[:-1], cu[1:], strict=True):
        qc, kc = q[a:b].float().transpose(0, 1), k[a:b].float().transpose(0, 1)  # [heads, L, d]
        probs = torch.softmax(qc @ kc.transpose(-1, -2) * attn.scaling, dim=-1)
        out.append(probs.mean(dim=(0, 1)))
    return torch.cat(out).cpu()
