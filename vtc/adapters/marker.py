"""`marker`: a learned grid-marker embedding for DynTok (DynTok §3.2: a marker after each row of merged
tokens tells the LLM where a row ends). Stock LLaVA-OV has one learned separator, ``image_newline``,
which vtc places both at row markers and at the end of the video; this adapter gives the row markers an
embedding of their own (initialised from ``image_newline``, so an untrained one changes nothing) and
trains only that vector. Reductions without markers are unaffected."""

from __future__ import annotations

from vtc.adapters.base import Adapter, register_adapter

NAME = "vtc_marker"


@register_adapter("marker")
class Marker(Adapter):
    prefixes = (f"model.{NAME}",)
    families = ("llava-onevision",)
    why_not = "Qwen2.5-VL has no separator embedding, so DynTok's row markers do not reach its LLM"

    def prepare(self, model) -> None:
        import torch

        inner = model.model
        if getattr(inner, NAME, None) is None:
            inner.register_parameter(NAME, torch.nn.Parameter(inner.image_newline.detach().clone()))
