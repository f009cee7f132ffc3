"""Stage 0 (offline, optional): stage a downloaded benchmark as a local task that ``vtc eval --data`` runs.

``prepare(task, src, out)`` reads a copy of the benchmark as its Hugging Face dataset repo lays it
out (the annotation json/parquet/csv files and the unpacked video folder) and writes ``out/``:

    out/<task>.jsonl   the questions in the local format (the columns lmms-eval's task reads)
    out/videos.csv     manifest ``video_id,path`` of the videos found, with the ids the rows use:
                       ``vtc extract out/videos.csv --store feats.zarr`` extracts exactly those
    out/subtitles/     Video-MME only: the ``<videoID>.srt`` files (for ``videomme_w_subtitle``)
    out/prepare.json   what was staged: counts, missing videos, the source

Expected inputs (``src``), per task — the files the dataset repo has once its zips are unpacked:

| task | annotations | videos |
|---|---|---|
| videomme | ``videomme/test-*.parquet`` (lmms-eval/Video-MME) | ``data/<videoID>.mp4``; ``subtitle/<videoID>.srt`` |
| mvbench | ``json/<sub_task>.json`` (OpenGVLab/MVBench) | ``video/<folder>/<video>`` (folder from lmms-eval's DATA_LIST) |
| nextqa | ``MC/test-*.parquet`` (lmms-eval/NExTQA) or NExT-QA's ``test.csv`` | ``<video>.mp4`` anywhere below src |
| longvideobench | ``lvb_val.json`` or ``validation-*.parquet`` | ``videos/<video_path>`` |
| mlvu | ``test-*.parquet``/json with ``video_name`` (sy1998/MLVU_dev), or MLVU's ``json/*.json`` | ``<video_name>`` anywhere below src |
| perceptiontest | ``mc_question_val/*.parquet`` (lmms-eval/PerceptionTest_Val) or ``all_valid.json`` | ``videos/<video_name>.mp4`` |
| egoschema | ``Subset/*.parquet`` (lmms-eval/egoschema) or ``questions.json`` + ``subset_answers.json`` | ``videos/<video_idx>.mp4`` |
| mcq | one ``*.jsonl``/``*.json``/``*.csv`` in the mcq format (CSV: options "a|b|c") | ``<video>.*`` below src |

Videos are matched by file stem anywhere below ``src`` when they are not at the expected path; a
question whose video is missing is kept (it fails at ``vtc eval`` time as "not in the store") and
listed in ``prepare.json``. For Video-MME, each row with a video also gets ``fps`` and
``total_frames`` as cv2 reports them — the numbers lmms-eval's subtitle selection uses.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vtc.errors import VtcError
from vtc.stages.inputs import VIDEO_EXTS


def prepare(task: str, src: str | Path, out: str | Path) -> Path:
    """Convert a downloaded copy of ``task`` at ``src`` into a local-task directory ``out``; returns ``out``."""
    from vtc.eval.tasks import check_rows, task_spec, write_jsonl

    spec = task_spec(task)
    src, out = Path(src), Path(out)
    if not src.exists():
        raise VtcError(f"source {src} does not exist")
    if out.resolve() == src.resolve():
        raise VtcError("--out must be a new directory, not the source")
    to_visual = getattr(spec.functions, f"{task}_doc_to_visual")

    rows = spec.read(src)
    if not rows:
        raise VtcError(f"no {task} questions found under {src} (expected: {spec.expected})")

    index = _video_index(src)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, str] = {}
    missing: list[str] = []
    for row in rows:
        vid = to_visual(row)[0]
        if vid in manifest or vid in missing:
            continue
        path = _locate(spec.locate(src, row), vid, index)
        if path is None:
            missing.append(vid)
        else:
            manifest[vid] = str(path.resolve())

    if spec.stage is not None:
        spec.stage(src, out, rows, manifest)

    for old in list(out.glob("*.jsonl")) + list(out.glob("*.parquet")):
        old.unlink()  # the directory must hold exactly one question file
    data = write_jsonl(out / f"{spec.data_name}.jsonl", [_jsonable(r) for r in rows])
    with open(out / "videos.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "path"])
        w.writerows(sorted(manifest.items()))
    n = check_rows(task, data)
    summary = {
        "task": task,
        "lmms_eval": spec.lmms_eval,
        "source": str(src.resolve()),
        "questions": n,
        "videos": len(manifest),
        "videos_missing": len(missing),
        "missing_examples": missing[:20],
        "subtitles": len(list((out / "subtitles").glob("*.srt"))) if (out / "subtitles").is_dir() else 0,
    }
    (out / "prepare.json").write_text(json.dumps(summary, indent=2))
    return out


# --- videos ----------------------------------------------------------------------------------------


def _video_index(src: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.suffix.lower() in VIDEO_EXTS and p.is_file():
                index.setdefault(p.stem, p)
    return index


def _locate(candidates: list[Path], vid: str, index: dict[str, Path]) -> Path | None:
    """The first of the task's expected paths that exists, else a file named like the id below src."""
    for c in candidates:
        if c.is_file():
            return c
    return index.get(Path(vid).name) or index.get(Path(vid).stem)


def _jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if k.startswith("_"):
            continue
        if hasattr(v, "tolist"):  # numpy scalars / arrays from parquet readers
            v = v.tolist()
        try:
            json.dumps(v)
        except TypeError:
            v = str(v)
        out[k] = v
    return out
