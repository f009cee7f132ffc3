"""Vision towers that produce the features LLaVA-OneVision consumes.

Default: the tower inside ``llava-hf/llava-onevision-qwen2-0.5b-ov-hf`` (26 SigLIP layers, fine-tuned
with the LLM), last layer, before the projector — exactly ``LlavaOnevisionModel.get_video_features``
up to the projector. A bare SigLIP checkpoint (``google/siglip-so400m-patch14-384``, SigLIP2
fixed-resolution checkpoints, or a local directory) works too; there the default layer is -2, the
26th of 27 layers, which is what LLaVA-OV was built on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from vtc.errors import VtcError

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class Preprocess:
    """LLaVA-OV's video preprocessing: resize to 384×384 (bicubic), x/255, (x - mean) / std."""

    size: tuple[int, int] = (384, 384)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: str = "bicubic"

    def to_dict(self) -> dict:
        return {
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "resample": self.resample,
            "rescale": "1/255",
        }

    def __call__(self, frames: np.ndarray):
        """uint8 [F, H, W, 3] (already resized) -> float32 tensor [F, 3, H, W]."""
        import torch

        if frames.shape[1:3] != tuple(self.size[::-1]) and frames.shape[1:3] != tuple(self.size):
            raise ValueError(f"frames are {frames.shape[1:3]}, expected {self.size}: resize in the decoder")
        # (x/255 - mean)/std as one multiply-add per element, written straight into NCHW float32.
        src = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        out = torch.empty(src.shape, dtype=torch.float32)
        out.copy_(src)
        return out.mul_(1.0 / (255.0 * std)).sub_(mean / std)


def load_config(model_id: str):
    """The checkpoint's config, or a one-line error (no config.json, unknown id, unreadable JSON)."""
    from pathlib import Path

    from transformers import AutoConfig

    if Path(model_id).is_dir() and not (Path(model_id) / "config.json").is_file():
        raise VtcError(f"{model_id} is not a checkpoint: {Path(model_id) / 'config.json'} is missing")
    try:
        return AutoConfig.from_pretrained(model_id)
    except Exception as e:  # OSError, a JSON error in config.json, an unknown model type (ValueError)
        raise load_error(model_id, e, "model config") from None


def load_error(model_id: str, e: BaseException, what: str = "weights") -> VtcError:
    """One line for a checkpoint that fails to load, naming its weight files where it is a local dir
    (a truncated model.safetensors raises deep inside safetensors)."""
    from pathlib import Path

    text = str(e).strip().splitlines()
    first = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    where = model_id
    p = Path(model_id)
    if p.is_dir() and what == "weights":
        files = sorted(f.name for f in p.glob("*.safetensors")) or sorted(f.name for f in p.glob("*.bin"))
        where = ", ".join(str(p / f) for f in files) or f"{model_id} (no weight file)"
    return VtcError(f"cannot load {what} of '{model_id}' from {where}: {first}")


def _config_hash(config) -> str:
    d = config.to_dict()
    d.pop("transformers_version", None)
    d.pop("_name_or_path", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encoder_identity(encoder, layer, grid) -> dict:
    """A vision encoder's identity in a feature store (either family's): checked on every append."""
    return {
        "model": encoder.model_id,
        "source": encoder.source,
        "revision": encoder.revision,
        "vision_config_hash": encoder.config_hash,
        "layer": layer,
        "grid": grid,
        "dim": encoder.dim,
        "compute_dtype": encoder.dtype,
        "preprocess": encoder.preprocess.to_dict(),
    }


def make_encoder(
    model_id: str | None,
    device: str = "cpu",
    dtype: str = "fp32",
    layer: int | None = None,
    pixels: tuple[int | None, int | None] = (None, None),
):
    """The vision side of the checkpoint's family: `VisionEncoder` (LLaVA-OneVision, SigLIP) or
    `vtc.encoders.qwen2_5_vl.QwenVisionTower`; both give `identity()`, `decode_size`, `video_grid(shape)`,
    `load()` and `encode(frames)` -> [T, h*w, D]. ``pixels``: Qwen2.5-VL's (min, max) resize area."""
    model_id = model_id or DEFAULT_MODEL
    if load_config(model_id).model_type == "qwen2_5_vl":
        from vtc.encoders.qwen2_5_vl import QwenVisionTower

        return QwenVisionTower(model_id, device=device, dtype=dtype, layer=layer, pixels=pixels)
    if pixels != (None, None):
        raise VtcError("--min-pixels/--max-pixels set Qwen2.5-VL's resize; LLaVA-OV frames are 384x384")
    return VisionEncoder(model_id, device=device, dtype=dtype, layer=layer)


@dataclass
class VisionEncoder:
    """Loads a SigLIP-family tower and turns preprocessed frames into [F, H*W, C] patch features."""

    model_id: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str = "fp32"
    layer: int | None = None  # None: LLaVA-OV's vision_feature_layer, or -2 for a bare SigLIP
    preprocess: Preprocess = field(default_factory=Preprocess)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise VtcError(f"unknown dtype '{self.dtype}'; valid: {', '.join(DTYPES)}")
        config = load_config(self.model_id)
        self.source = config.model_type
        if config.model_type == "llava_onevision":
            self.vision_config = config.vision_config
            if self.layer is None:
                self.layer = config.vision_feature_layer
            if not isinstance(self.layer, int):
                raise VtcError("multi-layer vision_feature_layer is not supported")
        elif config.model_type in ("siglip", "siglip_vision_model"):
            self.vision_config = getattr(config, "vision_config", config)
            if self.layer is None:
                self.layer = -2
        else:
            raise VtcError(
                f"'{self.model_id}' is a {config.model_type} model; vtc extract takes a LLaVA-OneVision "
                "or Qwen2.5-VL checkpoint (its tower is used) or a SigLIP vision model"
            )
        vc = self.vision_config
        if vc.image_size != self.preprocess.size[0]:
            self.preprocess = Preprocess(size=(vc.image_size, vc.image_size))
        side = vc.image_size // vc.patch_size
        self.grid = (side, side)
        self.dim = vc.hidden_size
        self.revision = getattr(config, "_commit_hash", None)
        self.config_hash = _config_hash(vc)
        self._model = None

    # Each frame is encoded on its own, so one batch may hold frames of several videos (vtc extract fills
    # tower batches across video boundaries). Qwen2.5-VL's tower pairs frames in time: not there.
    frames_independent = True

    @property
    def decode_size(self) -> tuple[int, int]:
        """(W, H) the decoder resizes frames to (LLaVA-OV's fixed square)."""
        return self.preprocess.size

    def video_grid(self, frame_shape) -> tuple[int, int]:
        """The patch grid of every video: fixed by the tower's image size."""
        return self.grid

    def identity(self) -> dict:
        """What makes features comparable: recorded in the store, checked on append."""
        return encoder_identity(self, self.layer, list(self.grid))

    def load(self):
        if self._model is not None:
            return self._model
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # A full SigLIP checkpoint (text tower too) would print a load report of every unused text weight.
        hf_logging.set_verbosity_error()
        torch_dtype = getattr(torch, DTYPES[self.dtype])
        try:
            if self.source == "llava_onevision":
                from transformers import LlavaOnevisionForConditionalGeneration

                full = LlavaOnevisionForConditionalGeneration.from_pretrained(
                    self.model_id, dtype=torch_dtype
                )
                tower = full.model.vision_tower
                del full  # only the tower is kept; the LLM's weights are freed
            else:
                from transformers import SiglipVisionModel

                tower = SiglipVisionModel.from_pretrained(self.model_id, dtype=torch_dtype)
        except Exception as e:
            raise load_error(self.model_id, e) from None
        # Keep only the layers up to the one stored: hidden_states[k] is the output of layer k, so the
        # layers after it (and the post-layernorm, which LLaVA-OV never uses) are dead compute.
        body = getattr(tower, "vision_model", tower)  # transformers 4.x nests it; 5.x does not
        layers = body.encoder.layers
        n = len(layers)
        keep = self.layer if self.layer >= 0 else n + 1 + self.layer
        if not 0 <= keep <= n:
            raise VtcError(f"layer {self.layer} does not exist in a {n}-layer tower")
        body.encoder.layers = layers[:keep]
        self._model = tower.to(self.device).eval()
        return self._model

    def encode(self, frames: np.ndarray, batch_size: int = 16, attention: bool = False):
        """uint8 frames [F, H, W, 3] (resized) -> float32 CPU tensor [F, H*W, C] from layer ``self.layer``.

        With ``attention=True`` returns ``(features, scores)``: scores [F, H*W] = the stored layer's
        self-attention that each token receives, softmax over keys, averaged over heads and queries
        (VisionZip's dominance score on SigLIP, which has no CLS token).
        """
        import torch

        model = self.load()
        vm = getattr(model, "vision_model", model)
        pixels = self.preprocess(frames)
        captured: list = []
        hook = None
        if attention:
            if not len(vm.encoder.layers):
                raise VtcError("attention scores need at least one transformer layer (layer >= 1)")
            attn = vm.encoder.layers[-1].self_attn
            hook = attn.register_forward_pre_hook(
                lambda mod, args, kwargs: captured.append(_received_attention(mod, args, kwargs)),
                with_kwargs=True,
            )
        out = []
        try:
            with torch.inference_mode():
                for i in range(0, len(pixels), batch_size):
                    px = pixels[i : i + batch_size].to(self.device, next(model.parameters()).dtype)
                    hidden = vm.encoder(
                        inputs_embeds=vm.embeddings(px)
                    ).last_hidden_state  # before post_layernorm
                    out.append(hidden.float().cpu())
        finally:
            if hook is not None:
                hook.remove()
        feats = torch.cat(out) if out else torch.empty(0, self.grid[0] * self.grid[1], self.dim)
        if not attention:
            return feats
        scores = torch.cat(captured) if captured else torch.empty(0, self.grid[0] * self.grid[1])
        return feats, scores


def _received_attention(attn, args, kwargs):
    """[B, N] mean over heads and queries of softmax(q k^T * scale) for one SigLIP attention module."""
    import torch

    h = args[0] if args else kwargs["hidden_states"]
    b, n, _ = h.shape
    q = attn.q_proj(h).view(b, n, attn.num_heads, -1).transpose(1, 2).float()
    k = attn.k_proj(h).view(b, n, attn.num_heads, -1).transpose(1, 2).float()
    probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)  # [B, heads, Nq, Nk]
    return probs.mean(dim=(1, 2)).cpu()
