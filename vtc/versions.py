"""Library versions and config hashes recorded in every artifact's provenance."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json

_LIBS = ("vtc", "torch", "transformers", "zarr", "numpy", "decord2", "av", "lmms-eval")


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBS:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def stable_hash(obj, n: int = 12) -> str:
    """Short sha256 of a JSON-able object with sorted keys: equal configs give equal hashes."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
