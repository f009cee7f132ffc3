"""Methods by name: the one registry type behind offline reducers (`vtc.reducers`) and online, in-LLM
methods (`vtc.eval.online`).

A method is a frozen dataclass registered under a name; its fields are its parameters, so
``--set key=value`` strings become typed fields (`convert_param`) and the config saved beside an
artifact (``{"method": name, **fields}``) rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable

_TRUE, _FALSE = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off")


class Registry:
    """Registered methods of one kind: ``what`` names it in messages ("method", "online method"), ``error``
    is the one-line error type for bad names and values, ``info`` the class of the metadata each
    registration carries (set as ``cls.info``, with ``cls.name``), ``check(name, cls, info)`` extra checks
    at registration (a TypeError refuses the class at import)."""

    def __init__(self, what: str, error: type[Exception], info: type, check: Callable | None = None):
        self.what, self.error, self.info, self.check = what, error, info, check
        self.classes: dict[str, type] = {}

    def register(self, name: str, **info):
        """Class decorator: register a frozen dataclass under ``name``; ``info`` fills the metadata."""
        meta = self.info(**info)

        def deco(cls: type) -> type:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{self.what} {cls.__name__} must be a dataclass")
            if name in self.classes and self.classes[name] is not cls:
                raise ValueError(
                    f"{self.what} name {name!r} is already registered by {self.classes[name].__name__}"
                )
            if self.check is not None:
                self.check(name, cls, meta)
            self.classes[name] = cls
            cls.name, cls.info = name, meta
            return cls

        return deco

    def sorted(self) -> dict[str, type]:
        """The registered classes by name, sorted."""
        return dict(sorted(self.classes.items()))

    def build(self, name: str, params: dict):
        """The method ``name`` with ``params`` (CLI strings converted to the fields' types); a bad name, key
        or value, or the class's own range checks (ValueError in __post_init__), raise one-line errors."""
        if name not in self.classes:
            raise self.error(f"unknown {self.what} {name!r}; valid: {', '.join(sorted(self.classes))}")
        cls = self.classes[name]
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in params.items():
            if key not in fields:
                raise self.error(f"unknown parameter {key!r} for {name}; valid: {', '.join(sorted(fields))}")
            try:
                kwargs[key] = convert_param(name, key, value, hints[key])
            except ValueError as e:
                raise self.error(str(e)) from None
        try:
            return cls(**kwargs)
        except self.error:
            raise
        except ValueError as e:
            raise self.error(f"{name}: {e}") from None

    def config(self, method) -> dict:
        """{"method": name, **params}: JSON-able; ``build(cfg.pop("method"), cfg)`` rebuilds it."""
        cls = type(method)
        if self.classes.get(getattr(cls, "name", None)) is not cls:
            raise self.error(f"{cls.__name__} is not a registered {self.what}")
        return {"method": cls.name, **dataclasses.asdict(method)}


def convert_param(method: str, key: str, value, typ: type):
    """Coerce a CLI string (or a compatible Python value) to the field's declared type; a ValueError names
    the method, the key and the value. Optional fields (``int | None``) accept None or none/null."""
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
            raise ValueError(f"bad value {value!r} for {method}.{key}: must be a finite number")
    elif typ is str:
        if isinstance(value, str):
            return value
    else:
        return value  # a field type the CLI cannot spell: pass through, the method validates
    raise ValueError(f"bad value {value!r} for {method}.{key}: expected {typ.__name__}")
