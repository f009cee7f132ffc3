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
import shutil
from pathlib import Path

from vtc.errors import VtcError
from vtc.stages.inputs import VIDEO_EXTS

# MLVU's raw question_type names that sy1998/MLVU_dev (lmms-eval's copy) spells differently.
_MLVU_RAW_TYPES = {"findNeedle": "needle"}


def prepare(task: str, src: str | Path, out: str | Path) -> Path:
    """Convert a downloaded copy of ``task`` at ``src`` into a local-task directory ``out``; returns ``out``."""
    from vtc.eval.tasks import LOCAL_TASKS, check_rows, task_spec, write_jsonl

    spec = task_spec(task)
    src, out = Path(src), Path(out)
    if not src.exists():
        raise VtcError(f"source {src} does not exist")
    if out.resolve() == src.resolve():
        raise VtcError("--out must be a new directory, not the source")
    module = __import__(f"vtc.eval.tasks.{spec['module']}", fromlist=["_"])
    to_visual = getattr(module, f"{task}_doc_to_visual")

    reader = _READERS["videomme" if task == "videomme_w_subtitle" else task]
    rows = reader(src)
    if not rows:
        raise VtcError(f"no {task} questions found under {src} (expected: {_EXPECTED[task]})")

    index = _video_index(src)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, str] = {}
    missing: list[str] = []
    for row in rows:
        vid = to_visual(row)[0]
        if vid in manifest or vid in missing:
            continue
        path = _locate(task, src, row, vid, index)
        if path is None:
            missing.append(vid)
        else:
            manifest[vid] = str(path.resolve())

    if task in ("videomme", "videomme_w_subtitle"):
        _stage_subtitles(src, out, rows, manifest)

    name = "videomme" if task == "videomme_w_subtitle" else task
    for old in list(out.glob("*.jsonl")) + list(out.glob("*.parquet")):
        old.unlink()  # the directory must hold exactly one question file
    data = write_jsonl(out / f"{name}.jsonl", [_jsonable(r) for r in rows])
    with open(out / "videos.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "path"])
        w.writerows(sorted(manifest.items()))
    n = check_rows(task, data)
    summary = {
        "task": task,
        "lmms_eval": LOCAL_TASKS[task]["lmms_eval"],
        "source": str(src.resolve()),
        "questions": n,
        "videos": len(manifest),
        "videos_missing": len(missing),
        "missing_examples": missing[:20],
        "subtitles": len(list((out / "subtitles").glob("*.srt"))) if (out / "subtitles").is_dir() else 0,
    }
    (out / "prepare.json").write_text(json.dumps(summary, indent=2))
    return out


# --- reading the raw layouts ---------------------------------------------------------------------


def _load(path: Path) -> list[dict]:
    """Rows of a .parquet / .jsonl / .json (list, or dict of rows) / .csv file."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (OSError, ValueError) as e:
        raise VtcError(
            f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if isinstance(data, dict):
        return [dict(v, _key=k) if isinstance(v, dict) else {"_key": k, "_value": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise VtcError(f"{path}: expected a list of questions")
    return data


def _files(src: Path, patterns: list[str]) -> list[Path]:
    """Files under src matching the first pattern that matches anything."""
    if src.is_file():
        return [src]
    for pat in patterns:
        found = sorted(p for p in src.glob(pat) if p.is_file() and ".cache" not in p.parts)
        if found:
            return found
    return []


def _rows_with(src: Path, patterns: list[str], column: str) -> list[dict]:
    rows: list[dict] = []
    for f in _files(src, patterns):
        part = _load(f)
        if part and isinstance(part[0], dict) and column in part[0]:
            rows += part
    return rows


def _read_videomme(src: Path) -> list[dict]:
    return _rows_with(
        src,
        ["videomme/test-*.parquet", "**/test-*.parquet", "**/*.parquet", "**/*.jsonl", "**/*.json"],
        "videoID",
    )


def _read_mvbench(src: Path) -> list[dict]:
    rows = []
    files = _files(src, ["json/*.json", "**/json/*.json"])
    for f in files:
        for r in _load(f):
            rows.append({**r, "sub_task": r.get("sub_task", f.stem)})
    return rows


def _read_nextqa(src: Path) -> list[dict]:
    rows = _rows_with(src, ["MC/test-*.parquet", "**/MC/test-*.parquet", "**/test.csv", "**/*.csv"], "a0")
    for r in rows:
        r["answer"] = int(r["answer"])
        r["video"] = str(r["video"])
        for i in range(5):
            r[f"a{i}"] = str(r[f"a{i}"])
    return rows


def _read_longvideobench(src: Path) -> list[dict]:
    rows = _rows_with(src, ["lvb_val.json", "**/lvb_val.json", "**/validation-*.parquet"], "correct_choice")
    for r in rows:
        r["correct_choice"] = int(r["correct_choice"])
    return rows


def _read_mlvu(src: Path) -> list[dict]:
    rows = _rows_with(src, ["**/test-*.parquet", "**/*.parquet", "**/*.jsonl"], "video_name")
    if rows:
        return rows
    # MLVU's own json/<n>_<type>.json: question, candidates, answer = the right candidate's text.
    rows = []
    for f in _files(src, ["json/*.json", "**/json/*.json"]):
        for r in _load(f):
            if "candidates" not in r or "video" not in r:
                continue
            cands = list(r["candidates"])
            if r["answer"] not in cands:
                raise VtcError(f"{f}: answer {r['answer']!r} is not one of its candidates")
            qtype = r.get("question_type", f.stem.split("_", 1)[-1])
            rows.append(
                {
                    "video_name": r["video"],
                    "duration": r.get("duration"),
                    "question": r["question"]
                    + "\n"
                    + "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(cands)),
                    "candidates": cands,
                    "answer": chr(65 + cands.index(r["answer"])),
                    "task_type": _MLVU_RAW_TYPES.get(qtype, qtype),
                    "question_id": r.get("question_id", f"{f.stem}_{len(rows)}"),
                }
            )
    return rows


def _read_perceptiontest(src: Path) -> list[dict]:
    rows = _rows_with(
        src, ["mc_question_val/*.parquet", "**/mc_question_val/*.parquet", "**/*.parquet"], "answer_id"
    )
    if rows:
        for r in rows:
            r["answer_id"] = int(r["answer_id"])
        return rows
    # Perception Test's all_valid.json: {video_id: {"mc_question": [{id, question, options, answer_id, area, ...}]}}
    rows = []
    for f in _files(src, ["all_valid.json", "**/all_valid.json"]):
        for vid in _load(f):
            for q in vid.get("mc_question", []):
                rows.append(
                    {
                        "video_name": vid.get("metadata", {}).get("video_id", vid["_key"]),
                        "question_id": q.get("id"),
                        "question": q["question"],
                        "options": list(q["options"]),
                        "answer_id": int(q["answer_id"]),
                        "area": q.get("area", ""),
                        "reasoning": q.get("reasoning", ""),
                        "tag": q.get("tag", []),
                    }
                )
    return rows


def _read_egoschema(src: Path) -> list[dict]:
    rows = _rows_with(src, ["Subset/*.parquet", "**/Subset/*.parquet"], "video_idx")
    if rows:
        return rows
    # EgoSchema's github layout: questions.json (q_uid, question, option 0..4) + subset_answers.json.
    qs, ans = (
        _files(src, ["questions.json", "**/questions.json"]),
        _files(src, ["subset_answers.json", "**/subset_answers.json"]),
    )
    if not qs or not ans:
        return []
    answers = {a["_key"]: a["_value"] for a in _load(ans[0])}
    rows = []
    for q in _load(qs[0]):
        if q["q_uid"] in answers:
            rows.append(
                {
                    "question_idx": q["q_uid"],
                    "question": q["question"],
                    "video_idx": q["q_uid"],
                    "option": [f"{chr(65 + i)}. {q[f'option {i}']}" for i in range(5)],
                    "answer": str(answers[q["q_uid"]]),
                }
            )
    return rows


def _read_mcq(src: Path) -> list[dict]:
    rows = _rows_with(src, ["*.jsonl", "*.json", "*.csv", "**/*.jsonl", "**/*.json"], "options")
    for r in rows:
        if isinstance(r["options"], str):  # a CSV cell: options separated by "|"
            r["options"] = [o.strip() for o in r["options"].split("|")]
        if not r.get("category"):
            r.pop("category", None)
    return rows


_READERS = {
    "videomme": _read_videomme,
    "mvbench": _read_mvbench,
    "nextqa": _read_nextqa,
    "longvideobench": _read_longvideobench,
    "mlvu": _read_mlvu,
    "perceptiontest": _read_perceptiontest,
    "egoschema": _read_egoschema,
    "mcq": _read_mcq,
}

_EXPECTED = {
    "videomme": "videomme/test-*.parquet with videoID rows; videos in data/, subtitles in subtitle/",
    "videomme_w_subtitle": "videomme/test-*.parquet with videoID rows; videos in data/, subtitles in subtitle/",
    "mvbench": "json/<sub_task>.json files; videos in video/<folder>/",
    "nextqa": "MC/test-*.parquet or NExT-QA's test.csv (columns video, question, a0..a4, answer, type)",
    "longvideobench": "lvb_val.json or validation-*.parquet; videos in videos/",
    "mlvu": "a parquet/jsonl with video_name rows (sy1998/MLVU_dev) or MLVU's json/*.json",
    "perceptiontest": "mc_question_val/*.parquet or all_valid.json; videos in videos/",
    "egoschema": "Subset/*.parquet or questions.json + subset_answers.json; videos in videos/",
    "mcq": "one *.jsonl/*.json/*.csv with video, question, options, answer",
}


# --- videos, subtitles ---------------------------------------------------------------------------


def _video_index(src: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.suffix.lower() in VIDEO_EXTS and p.is_file():
                index.setdefault(p.stem, p)
    return index


def _locate(task: str, src: Path, row: dict, vid: str, index: dict[str, Path]) -> Path | None:
    candidates: list[Path] = []
    if task == "mvbench":
        from vtc.eval.tasks.mvbench import DATA_LIST

        folder = DATA_LIST.get(row["sub_task"], row["sub_task"])
        candidates = [
            src / "video" / folder / row["video"],
            src / "video" / "data0613" / folder / row["video"],
        ]
    elif task == "longvideobench":
        candidates = [src / "videos" / row["video_path"]]
    elif task == "mlvu":
        candidates = [src / row["video_name"]]
    for c in candidates:
        if c.is_file():
            return c
    return index.get(Path(vid).name) or index.get(Path(vid).stem)


def _stage_subtitles(src: Path, out: Path, rows: list[dict], manifest: dict[str, str]) -> None:
    """Copy ``subtitle/<videoID>.srt`` to ``out/subtitles`` and add cv2's fps / frame count per row.

    Only for videos that were found: lmms-eval picks the subtitles of 32 frames, which needs the
    video's frame rate and length (a question whose video is missing cannot be evaluated anyway).
    """
    srts = {p.stem: p for p in (sorted(src.rglob("*.srt")) if src.is_dir() else [])}
    if srts:
        (out / "subtitles").mkdir(exist_ok=True)
    info: dict[str, tuple[float, int]] = {}
    for row in rows:
        vid = row["videoID"]
        if vid not in manifest:
            continue
        if vid in srts and not (out / "subtitles" / f"{vid}.srt").exists():
            shutil.copyfile(srts[vid], out / "subtitles" / f"{vid}.srt")
        if vid not in info:
            info[vid] = _cv2_info(manifest[vid])
        if vid in info and info[vid][0] > 0:
            row["fps"], row["total_frames"] = info[vid]


def _cv2_info(path: str) -> tuple[float, int]:
    """(fps, frame count) as lmms-eval's Video-MME subtitle code reads them (cv2 container properties)."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0), int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()


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
