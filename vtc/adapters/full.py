"""`full`: every weight of the LLM (embeddings, decoder layers, norm, LM head), for tiny models and the
demo; on a 0.5B model it is 494 M weights, and LoRA is the practical choice. The vision side (projector,
image newline) is separate: combine with `projector` to train it too."""

from __future__ import annotations

from vtc.adapters.base import Adapter, register_adapter


@register_adapter("full")
class Full(Adapter):
    prefixes = ("model.language_model.", "lm_head.")
