"""`projector`: LLaVA-OV's multimodal projector (Linear 1152→D, GELU, Linear D→D; 1,836,800 weights at
D = 896, the 0.5B model). It sits between the stored tower features and the plan: vtc applies projector →
the model's pooling → the reduction's plan, so training it adapts the projected tokens to a reduction."""

from __future__ import annotations

from vtc.adapters.base import Adapter, register_adapter


@register_adapter("projector")
class Projector(Adapter):
    prefixes = ("model.multi_modal_projector.",)
    families = ("llava-onevision",)
    # vtc stores Qwen2.5-VL's merger output (see vtc.encoders.qwen2_5_vl), so its merger never runs on it
    why_not = "the store holds the merger's output, which training cannot change; train lora instead"
