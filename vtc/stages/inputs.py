"""Turn command-line inputs (files, directories, globs, manifests) into stable, unique (video_id, path)."""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path

from vtc.errors import VtcError

VIDEO_EXTS = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".3gp"}
MANIFEST_EXTS = {".csv", ".jsonl"}


def _read_manifest(path: Path) -> list[tuple[str | None, str]]:
    """CSV with a header containing `path` (and optionally `video_id`), or JSONL with the same keys.
    Relative paths are taken relative to the manifest's folder."""
    rows: list[dict] = []
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise VtcError(f"{path}:{n}: not JSON ({e.msg})") from None
    out = []
    for n, row in enumerate(rows, 1):
        if "path" not in row or not row["path"]:
            raise VtcError(f"{path}: row {n} has no 'path' (columns: video_id,path)")
        p = Path(row["path"])
        if not p.is_absolute():
            p = path.parent / p
        out.append((row.get("video_id") or None, str(p)))
    return out


def resolve_inputs(inputs: list[str], warnings: list[str] | None = None) -> list[tuple[str, str]]:
    """Expand inputs into (video_id, path) pairs, in a stable order.

    Ids: a manifest's ``video_id`` when given; otherwise the file stem, or — where two files share a
    stem — their path relative to the common parent with '/' kept, so ids never depend on run order.
    A path that does not exist is kept (it is recorded as a failure, not silently dropped). A directory
    with no video file in it is named in ``warnings`` (when given) instead of vanishing silently.
    """
    explicit: list[tuple[str | None, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_EXTS)
            if not found and warnings is not None:
                warnings.append(f"{item}: directory holds no video file ({', '.join(sorted(VIDEO_EXTS))})")
            explicit += [(None, str(q)) for q in found]
        elif p.suffix.lower() in MANIFEST_EXTS and p.is_file():
            explicit += _read_manifest(p)
        elif any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise VtcError(f"no file matches {item!r}")
            explicit += [(None, m) for m in matches if Path(m).is_file()]
        else:
            explicit.append((None, item))

    # Same file twice (e.g. a dir and a glob over it): keep the first.
    seen_paths: set[str] = set()
    unique: list[tuple[str | None, str]] = []
    for vid, path in explicit:
        key = str(Path(path).resolve())
        if key not in seen_paths:
            seen_paths.add(key)
            unique.append((vid, path))

    stems: dict[str, int] = {}
    for vid, path in unique:
        if vid is None:
            stems[Path(path).stem] = stems.get(Path(path).stem, 0) + 1
    clashing = [str(Path(p).resolve()) for v, p in unique if v is None and stems[Path(p).stem] > 1]
    common = Path(_common_parent(clashing)) if clashing else None

    out: list[tuple[str, str]] = []
    ids: dict[str, str] = {}
    for vid, path in unique:
        if vid is None:
            stem = Path(path).stem
            vid = stem
            if stems[stem] > 1:
                vid = str(Path(path).resolve().relative_to(common).with_suffix(""))
        if vid in ids:
            raise VtcError(f"video id '{vid}' is given to both {ids[vid]} and {path}")
        ids[vid] = path
        out.append((vid, path))
    return out


def _common_parent(paths: list[str]) -> str:
    import os

    return os.path.commonpath([str(Path(p).parent) for p in paths])
