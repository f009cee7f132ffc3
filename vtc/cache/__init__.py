"""The zarr feature/token cache: layout, index, provenance, atomic per-video commits."""

from vtc.cache.store import INDEX_FILE, SCHEMA_VERSION, Store, non_finite, video_key

__all__ = ["INDEX_FILE", "SCHEMA_VERSION", "Store", "non_finite", "video_key"]
