"""Trainable adapters: what `vtc train --adapter` makes trainable, saves, and `vtc eval --adapter` loads.

An adapter names the weights it trains (``attach`` marks them trainable and returns them), saves exactly
those (``state``), and puts them back into a freshly loaded base model (``load``). Every other weight
stays frozen. One file per adapter; ``--adapter projector,full`` combines them.

Where each sits in the data path (stored tower features → projector → the model's pooling → the plan →
token modules → the LLM): ``projector`` is the projector; ``marker`` is the plan's row-marker embedding;
``vq-attn`` and ``cross-dynamics`` are token modules on a clustering reduction's codebook and index map;
``lora`` and ``full`` are the LLM.
"""

from __future__ import annotations

from vtc.adapters import cross_dynamics, full, lora, marker, projector, vq_attn  # noqa: F401  (registration)
from vtc.adapters.base import (
    ADAPTERS,
    TOKEN_MODULES,
    Adapter,
    TokenAdapter,
    get_adapters,
    load_adapter,
    register_adapter,
)

__all__ = [
    "ADAPTERS",
    "TOKEN_MODULES",
    "Adapter",
    "TokenAdapter",
    "get_adapters",
    "load_adapter",
    "register_adapter",
]
