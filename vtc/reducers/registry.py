"""Reducers by name: `vtc compress --method dyntok --set threshold=0.5` becomes `DynTok(threshold=0.5)`.

A reducer is a frozen dataclass registered with `@register(name)`; its fields are the method's parameters,
so the config saved beside an artifact (`reducer_config`) rebuilds it exactly (`get_reducer(method, **params)`).
"""

from __future__ import annotations

import dataclasses
import math
import typing

from vtc.errors import VtcError
from vtc.reducers.base import Reducer

_REGISTRY: dict[str, type] = {}
_TRUE, _FALSE = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off")


class ReducerError(VtcError, ValueError):
    """A bad method name or parameter: a ValueError for callers, a one-line VtcError for the CLI."""


# Parameters several methods share, explained once; a method's own ones come with its @register.
COMMON_PARAMS = {
    "grid": "token grid the method works on: pooled (LLaVA-OV's 2x2-pooled 14x14) or native (27x27)",
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


def register(name: str, **info):
    """Class decorator: register a frozen dataclass reducer under `name`; ``info`` fills MethodInfo."""
    meta = MethodInfo(**info)

    def deco(cls: type) -> type:
        if not (dataclasses.is_dataclass(cls) and issubclass(cls, Reducer)):
            raise TypeError(f"reducer {cls.__name__} must be a dataclass deriving from Reducer")
        if cls.__call__ is Reducer.__call__ and cls.batch is Reducer.batch:
            raise TypeError(f"reducer {cls.__name__} defines neither __call__ nor batch")
        if cls.decision_flops is Reducer.decision_flops:  # vtc compress records every video's module FLOPs
            raise TypeError(f"reducer {cls.__name__} has no decision_flops (its FLOPs formula)")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"reducer name {name!r} is already registered by {_REGISTRY[name].__name__}")
        if meta.budget and "budget" not in {f.name for f in dataclasses.fields(cls)}:
            raise TypeError(f"reducer {name} declares budget=True but has no `budget` field")
        _REGISTRY[name] = cls
        cls.info = meta
        return cls

    return deco


def method_label(config: dict, defaults: dict | None = None) -> str:
    """'pool stride=4': a method config's name and the parameters that differ from their defaults (the
    registered reducer's unless ``defaults`` is given; a method unknown here shows every parameter)."""
    name = str(config.get("method"))
    if defaults is None and name in _REGISTRY:
        defaults = {f.name: f.default for f in dataclasses.fields(_REGISTRY[name])}
    shown = [
        f"{k}={v}"
        for k, v in config.items()
        if k not in ("method", "seed") and (defaults is None or k not in defaults or defaults[k] != v)
    ]
    return " ".join([name, *shown])


def list_reducers() -> dict[str, type]:
    """Registered reducers by name, sorted."""
    return dict(sorted(_REGISTRY.items()))


def convert_param(method: str, key: str, value, typ: type):
    """Coerce a CLI string (or a compatible Python value) to the field's declared type.

    Optional fields (``int | None``) accept None or the strings none/null as None.
    """
    args = typing.get_args(typ)
    if type(None) in args and len(args) == 2:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        typ = next(a for a in args if a is not type(None))
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif typ is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is not None:
            if math.isfinite(number):
                return number
            # NaN and inf would reach zarr.json, which then is not JSON, and no method means anything by them
            raise ReducerError(f"bad value {value!r} for {method}.{key}: must be a finite number")
    elif typ is str:
        if isinstance(value, str):
            return value
    else:
        return value  # a field type the CLI cannot spell: pass through, the reducer validates
    raise ReducerError(f"bad value {value!r} for {method}.{key}: expected {typ.__name__}")


def build_registered(
    registry: dict[str, type],
    name: str,
    params: dict,
    error: type[Exception] | None = None,
    what: str = "method",
):
    """Build the dataclass registered as ``name`` from ``params`` (CLI strings converted to the fields'
    types); a bad name, key or value, or the class's own range checks, raise one-line ``error``s.
    Serves the reducer registry and the online-method registry (vtc.eval.online)."""
    error = error or ReducerError
    if name not in registry:
        raise error(f"unknown {what} {name!r}; valid: {', '.join(sorted(registry))}")
    cls = registry[name]
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in params.items():
        if key not in fields:
            raise error(f"unknown parameter {key!r} for {name}; valid: {', '.join(sorted(fields))}")
        try:
            kwargs[key] = convert_param(name, key, value, hints[key])
        except ReducerError as e:
            raise error(str(e)) from None
    try:
        return cls(**kwargs)
    except error:
        raise
    except ValueError as e:  # the class's own range checks (__post_init__)
        raise error(f"{name}: {e}") from None


def get_reducer(name: str, **params) -> Reducer:
    """Build a registered reducer; string values are converted to the field's type."""
    return build_registered(_REGISTRY, name, params)


def reducer_config(r: Reducer) -> dict:
    """{"method": name, **params}: JSON-able; `get_reducer(cfg.pop("method"), **cfg)` rebuilds it."""
    for name, cls in _REGISTRY.items():
        if type(r) is cls:
            return {"method": name, **dataclasses.asdict(r)}
    raise ValueError(f"{type(r).__name__} is not a registered reducer")
