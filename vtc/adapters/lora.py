"""`lora`: peft LoRA on the LLM's linear layers (LoRA: Hu et al. 2021, arXiv 2106.09685).

Defaults as LLaVA-NeXT trains LoRA: r=64, alpha=16, dropout 0.05, on every linear layer of the decoder
(q, k, v, o, gate, up, down projections) and not the LM head. Set with ``vtc train --lora r=16,alpha=32,
dropout=0,targets=q_proj+v_proj``. The saved run holds only the LoRA matrices; evaluation injects the same
layers into the base model, loads them and merges them into the weights (W + (alpha/r)·B·A), so the
evaluated model runs at the base model's speed. Combines with `projector`.
"""

from __future__ import annotations

from vtc.adapters.base import Adapter, register_adapter
from vtc.errors import VtcError

DEFAULTS = {
    "r": 64,
    "alpha": 16,
    "dropout": 0.05,
    "targets": "q_proj+k_proj+v_proj+o_proj+gate_proj+up_proj+down_proj",
}


@register_adapter("lora")
class Lora(Adapter):
    prefixes = ("model.language_model.",)

    def __init__(self, options: dict | None = None):
        opts = {**DEFAULTS, **(options or {})}
        unknown = sorted(set(opts) - set(DEFAULTS))
        if unknown:
            raise VtcError(f"unknown LoRA option '{unknown[0]}'; valid: {', '.join(DEFAULTS)}")
        try:
            self.options = {
                "r": int(opts["r"]),
                "alpha": float(opts["alpha"]),
                "dropout": float(opts["dropout"]),
                "targets": str(opts["targets"]),
            }
        except ValueError as e:
            raise VtcError(f"bad LoRA option: {e}") from None
        if self.options["r"] < 1 or not 0 <= self.options["dropout"] < 1:
            raise VtcError("LoRA needs r >= 1 and 0 <= dropout < 1")

    def owns(self, param_name: str) -> bool:
        return param_name.startswith(self.prefixes) and ".lora_" in param_name

    def prepare(self, model) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        if any(".lora_" in n for n, _ in model.named_parameters()):
            return
        cfg = LoraConfig(
            r=self.options["r"],
            lora_alpha=self.options["alpha"],
            lora_dropout=self.options["dropout"],
            target_modules=self.options["targets"].split("+"),
            bias="none",
        )
        try:
            inject_adapter_in_model(cfg, model.model.language_model)
        except ValueError as e:  # no module matched the targets
            raise VtcError(f"LoRA: {str(e).splitlines()[0]}") from None

    def load(self, model, state: dict) -> None:
        super().load(model, state)
        from peft.tuners.lora import LoraLayer

        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.merge()
