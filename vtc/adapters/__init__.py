"""Trainable adapters: what `vtc train --adapter` makes trainable, saves, and `vtc eval --adapter` loads.

An adapter names the weights it trains (``attach`` marks them trainable and returns them), saves exactly
those (``state``), and puts them back into a freshly loaded base model (``load``). Every other weight
stays frozen. One file per adapter; ``--adapter projector,full`` combines them.
"""

from __future__ import annotations

from vtc.adapters import full, lora, marker, projector  # noqa: F401  (registration)
from vtc.adapters.base import ADAPTERS, Adapter, get_adapters, load_adapter, register_adapter

__all__ = ["ADAPTERS", "Adapter", "get_adapters", "load_adapter", "register_adapter"]
