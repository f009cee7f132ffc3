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
    families: tuple[str, ...] = ("llava-onevision", "qwen2.5-vl")  # the model families it trains on
    why_not = ""  # why it does not apply to the others

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


# Modules on the reduced tokens, in the order ``vtc.eval.llava.embed_video`` applies them (after the
# projector and the plan, before the LLM): attribute names on the LLaVA-OV inner model.
TOKEN_MODULES = ("vtc_vq_attn", "vtc_cross_dynamics")


class TokenAdapter(Adapter):
    """An adapter that adds a module of its own on the reduced tokens of a clustering reduction (a codebook
    / token base of K visual tokens and its index map / token dynamics map): vq-attn, cross-dynamics.

    Its settings (``defaults``, parsed by ``parse``) and the sizes read from the training data by ``bind``
    are saved with the run, so evaluation rebuilds the same module before loading its weights."""

    attr = ""  # the module's attribute on the inner model, one of TOKEN_MODULES
    families = ("llava-onevision",)
    why_not = "token modules run in LLaVA-OV's embedding path (after its projector); Qwen2.5-VL's has no slot"
    defaults: dict = {}  # the user's settings; every token module has "heads"

    def __init__(self, options: dict | None = None):
        opts = {**self.defaults, **(options or {})}
        unknown = sorted(set(opts) - set(self.defaults) - {"cells"})
        if unknown:
            raise VtcError(f"unknown {self.name} option '{unknown[0]}'; valid: {', '.join(self.defaults)}")
        try:
            self.options = self.parse({k: opts[k] for k in self.defaults})
            if "cells" in opts:  # read from the data by ``bind``, saved with the run
                self.options["cells"] = int(opts["cells"])
        except (TypeError, ValueError) as e:
            raise VtcError(f"bad {self.name} option: {e}") from None

    @property
    def prefixes(self) -> tuple[str, ...]:  # type: ignore[override]
        return (f"model.{self.attr}.",)

    def parse(self, opts: dict) -> dict:
        """The user's settings, checked (a ValueError is the one-line error)."""
        return dict(opts)

    def cells(self, base_grid: tuple[int, int, int]) -> int:
        """The grid cells the module is built for, from a reduction's base grid (T, Hb, Wb)."""
        raise NotImplementedError

    def build(self, dim: int):
        """The module for LLM hidden size ``dim``, freshly initialised."""
        if dim % self.options["heads"]:
            raise VtcError(
                f"{self.name}: heads={self.options['heads']} does not divide the hidden size {dim}"
            )
        return self.make(dim)

    def make(self, dim: int):
        raise NotImplementedError

    def bind(self, reduction) -> None:
        """Size the module on one training sample's reduction (refusing tokens without an index map)."""
        cluster_map(reduction, self.name)
        self.options.setdefault("cells", self.cells(reduction.base_grid))

    def prepare(self, model) -> None:
        inner = model.model
        if getattr(inner, self.attr, None) is not None:
            return
        if "cells" not in self.options:
            raise VtcError(f"adapter {self.name}: the saved run lacks its 'cells' setting")
        ref = inner.multi_modal_projector.linear_1.weight
        module = self.build(int(model.config.text_config.hidden_size))
        inner.add_module(self.attr, module.to(ref.device, ref.dtype))


def start_as_identity(attn) -> None:
    """Zero an attention's output projection: a residual module built on it starts as the identity, so an
    untrained adapter passes the codebook through unchanged."""
    attn.out_proj.weight.data.zero_()
    attn.out_proj.bias.data.zero_()


def cluster_map(reduction, adapter: str):
    """(index map [T, Hb, Wb] int64 of 0-based visual-token ids, is_visual [N] bool) of a clustering
    reduction (vqtoken's index_map, tokendynamics' dynamics_map); any other reduction is one line."""
    from vtc.reducers.base import KIND_VISUAL

    for key in ("index_map", "dynamics_map"):
        if key in reduction.extras:
            return reduction.extras[key].long(), reduction.kind == KIND_VISUAL
    raise VtcError(
        f"adapter {adapter} works on a clustering reduction (vqtoken or tokendynamics: a codebook and its "
        "index map); these tokens have no index map"
    )


def cluster_inputs(tokens, reduction, adapter: str, cells: int | None = None):
    """What a token module reads, on ``tokens``' device: (index map [T, Hb*Wb], is_visual [N], the codebook
    B = the visual rows of ``tokens``). ``cells``: the cells per frame the module was built for; another
    grid is refused in one line."""
    index, visual = cluster_map(reduction, adapter)
    index, visual = index.to(tokens.device).reshape(index.shape[0], -1), visual.to(tokens.device)
    if cells is not None and index.shape[1] != cells:
        raise VtcError(
            f"{adapter} was trained on {cells} cells per frame; this video has {index.shape[1]}: use the "
            "same encoder and grid"
        )
    return index, visual, tokens[visual]


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
    """Load a trained run's adapters into ``model`` (a freshly loaded base), after the run it was trained
    on top of (``vtc train --init``) if any; refuse a run trained on another base model or another store
    identity. Returns the run's adapter.json."""
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
    init = meta.get("init")
    if init:  # trained on top of another run: that one goes in first
        parent = Path(init["run"])
        if not (parent / "adapter.json").exists():
            raise VtcError(f"{run} was trained on top of {parent}, which is gone; put it back or retrain")
        if load_adapter(model, parent, store_identity).get("identity_hash") != init.get("identity_hash"):
            raise VtcError(
                f"{run} was trained on top of {parent}, which has been retrained since; retrain {run}"
            )
    try:
        weights = load_file(str(run / "adapter.safetensors"))
    except Exception as e:  # noqa: BLE001 - truncated or foreign file
        raise VtcError(f"{run / 'adapter.safetensors'} is unreadable ({type(e).__name__})") from None
    for a in get_adapters(meta["adapters"], meta.get("adapter_options")):
        a.load(model, weights)
    return meta
