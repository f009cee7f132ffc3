"""The adapter contract and registry (see vtc.adapters)."""

from __future__ import annotations

from pathlib import Path

from vtc.errors import VtcError

ADAPTERS: dict[str, type] = {}


def register_adapter(name: str):
    def deco(cls: type) -> type:
        cls.name = name
        ADAPTERS[name] = cls
        return cls

    return deco


class Adapter:
    """Trains the base model's own parameters whose names start with one of ``prefixes``."""

    name = ""
    prefixes: tuple[str, ...] = ()
    options: dict = {}  # an adapter's own settings (LoRA's rank...), saved with the run

    def __init__(self, options: dict | None = None):
        if options:
            raise VtcError(f"adapter {self.name} takes no options")

    def owns(self, param_name: str) -> bool:
        return param_name.startswith(self.prefixes)

    def prepare(self, model) -> None:
        """Add the adapter's own modules or weights to the model (none for the model's own weights);
        called before training and before loading, so both see the same parameter names."""

    def attach(self, model) -> list:
        """Mark this adapter's weights trainable; returns them (their count is the adapter's size)."""
        self.prepare(model)
        params = [p for n, p in model.named_parameters() if self.owns(n)]
        if not params:
            raise VtcError(f"adapter {self.name}: the model has no weights under {', '.join(self.prefixes)}")
        for p in params:
            p.requires_grad_(True)
        return params

    def state(self, model) -> dict:
        return {n: p.detach().contiguous() for n, p in model.named_parameters() if self.owns(n)}

    def load(self, model, state: dict) -> None:
        self.prepare(model)
        own = {n: p for n, p in model.named_parameters() if self.owns(n)}
        missing = sorted(set(own) - set(state))
        if missing:
            raise VtcError(f"adapter {self.name}: the saved run lacks '{missing[0]}'")
        import torch

        with torch.no_grad():
            for n, p in own.items():
                if tuple(state[n].shape) != tuple(p.shape):
                    raise VtcError(
                        f"adapter {self.name}: '{n}' is {list(state[n].shape)} in the run but "
                        f"{list(p.shape)} in this model: it was trained on another base model"
                    )
                p.copy_(state[n].to(p.dtype))


def get_adapters(names: str | list[str], options: dict[str, dict] | None = None) -> list[Adapter]:
    """'projector,full' -> adapter instances, in a fixed order; unknown names are a one-line error.
    ``options``: per adapter name, its settings (e.g. {"lora": {"r": 16}})."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise VtcError(f"give at least one adapter; valid: {', '.join(sorted(ADAPTERS))}")
    unknown = [n for n in names if n not in ADAPTERS]
    if unknown:
        raise VtcError(f"unknown adapter '{unknown[0]}'; valid: {', '.join(sorted(ADAPTERS))}")
    if "full" in names and "lora" in names:
        raise VtcError("lora and full both train the LLM: choose one")
    options = options or {}
    return [ADAPTERS[n](options.get(n)) for n in sorted(set(names))]


def load_adapter(model, run: str | Path, store_identity: str | None = None) -> dict:
    """Load a trained run's adapters into ``model`` (a freshly loaded base); refuse a run trained on another
    base model or another store identity. Returns the run's adapter.json."""
    from safetensors.torch import load_file

    from vtc.cache.jsonl import read_json
    from vtc.encoders.vision import _config_hash

    run = Path(run)
    meta_path = run / "adapter.json"
    if not meta_path.exists():
        raise VtcError(f"{run} holds no trained adapter (no adapter.json); train it to the end first")
    meta = read_json(meta_path)
    if meta is None:
        raise VtcError(f"{meta_path} is unreadable; train the run again (--fresh)")
    if meta.get("base_model", {}).get("config_hash") != _config_hash(model.config):
        raise VtcError(f"{run} was trained on another base model ({meta.get('base_model', {}).get('id')})")
    if store_identity is not None and meta.get("features_identity") != store_identity:
        raise VtcError(
            f"{run} was trained on features of another store identity; extract with the same encoder"
        )
    try:
        weights = load_file(str(run / "adapter.safetensors"))
    except Exception as e:  # noqa: BLE001 - truncated or foreign file
        raise VtcError(f"{run / 'adapter.safetensors'} is unreadable ({type(e).__name__})") from None
    for a in get_adapters(meta["adapters"], meta.get("adapter_options")):
        a.load(model, weights)
    return meta
