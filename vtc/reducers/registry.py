"""Reducers by name: `vtc compress --method dyntok --set threshold=0.5` becomes `DynTok(threshold=0.5)`.

A reducer is a frozen dataclass registered with `@register(name)`; its fields are the method's parameters,
so the config saved beside an artifact (`reducer_config`) rebuilds it exactly (`get_reducer(method, **params)`).
"""

from __future__ import annotations

import dataclasses

from vtc.errors import VtcError
from vtc.reducers.base import Reducer
from vtc.registry import Registry


class ReducerError(VtcError, ValueError):
    """A bad method name or parameter: a ValueError for callers, a one-line VtcError for the CLI."""


# Parameters several methods share, explained once; a method's own ones come with its @register.
COMMON_PARAMS = {
    "grid": "token grid the method works on: pooled (the model's own: LLaVA-OV's 2x2-pooled 14x14; on "
    "Qwen2.5-VL, whose tower merges 2x2 itself, the stored grid) or native (the stored grid: 27x27 on LLaVA-OV)",
    "budget": "exactly this many visual tokens per video (fixed-length mode); none: the method's own rule",
    "ratio": "fraction of each video's base tokens kept (when budget is none)",
    "seed": "random seed of the method's own draws; the same seed gives the same tokens",
}


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """What `vtc compress --list` shows beside a method's docstring and parameters."""

    paper: str = ""  # the paper's title and arXiv id ("baseline: ..." for a baseline without one)
    section: str = ""  # where in the paper: "§3.2, Eq. 3-4"
    summary: str = ""  # one line, at most 38 characters: the compact --list
    adaptive: bool = False  # the token count follows the content (else a fixed count per frame count)
    training: bool = False  # the method's full form needs a trained adapter
    licence: str | None = None  # a note where the original code is non-commercial
    budget: bool = False  # has a `budget` parameter: exactly that many visual tokens (fixed-length mode)
    needs: tuple[str, ...] = ()  # per-video arrays beside the features, as keywords, e.g. ("attention",)
    params: dict = dataclasses.field(default_factory=dict)  # parameter -> meaning (beside COMMON_PARAMS)

    def meaning(self, param: str) -> str:
        return self.params.get(param) or COMMON_PARAMS.get(param, "")


def _check(name: str, cls: type, meta: MethodInfo) -> None:
    """What `register` refuses at import: a method that is not one file's complete Reducer."""
    if not issubclass(cls, Reducer):
        raise TypeError(f"reducer {cls.__name__} must be a dataclass deriving from Reducer")
    if cls.__call__ is Reducer.__call__ and cls.batch is Reducer.batch:
        raise TypeError(f"reducer {cls.__name__} defines neither __call__ nor batch")
    if cls.decision_flops is Reducer.decision_flops:  # vtc compress records every video's module FLOPs
        raise TypeError(f"reducer {cls.__name__} has no decision_flops (its FLOPs formula)")
    if meta.budget and "budget" not in {f.name for f in dataclasses.fields(cls)}:
        raise TypeError(f"reducer {name} declares budget=True but has no `budget` field")


REDUCERS = Registry("method", ReducerError, MethodInfo, _check)


def register(name: str, **info):
    """Class decorator: register a frozen dataclass reducer under `name`; ``info`` fills MethodInfo."""
    return REDUCERS.register(name, **info)


def method_label(config: dict, defaults: dict | None = None) -> str:
    """'pool stride=4': a method config's name and the parameters that differ from their defaults (the
    registered reducer's unless ``defaults`` is given; a method unknown here shows every parameter)."""
    name = str(config.get("method"))
    if defaults is None and name in REDUCERS.classes:
        defaults = {f.name: f.default for f in dataclasses.fields(REDUCERS.classes[name])}
    shown = [
        f"{k}={v}"
        for k, v in config.items()
        if k not in ("method", "seed") and (defaults is None or k not in defaults or defaults[k] != v)
    ]
    return " ".join([name, *shown])


def list_reducers() -> dict[str, type]:
    """Registered reducers by name, sorted."""
    return REDUCERS.sorted()


def get_reducer(name: str, **params) -> Reducer:
    """Build a registered reducer; string values are converted to the field's type."""
    return REDUCERS.build(name, params)


def reducer_config(r: Reducer) -> dict:
    """{"method": name, **params}: JSON-able; `get_reducer(cfg.pop("method"), **cfg)` rebuilds it."""
    return REDUCERS.config(r)
