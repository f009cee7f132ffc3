"""MLVU (dev, multiple choice) on a local copy, as lmms-eval's ``mlvu_dev`` (``sy1998/MLVU_dev``).

Prompt (``mlvu_doc_to_text``: the ``question`` text, which carries the lettered options, then
"\\nOnly give the best option.\\nBest option: (") and per-sample scoring (``mlvu_process_results``:
lmms-eval's ``extract_mcq_answer`` over A-D against the ``answer`` letter) are lmms-eval's.

Aggregation differs on purpose: lmms-eval's ``mlvu_aggregate_results_dev`` averages accuracy over a
fixed list of 7 task types, counting a type with no questions as 0 % (and fails on a type outside
the list), so a local copy holding some of the types would be under-reported. Here the score is
the mean over the task types present of each type's accuracy (%) — the same number on the full dev
set, where all 7 are present. Per sample: ``score`` and ``category`` (= ``task_type``).
Store ids: the stem of ``video_name``.
"""

# ruff: noqa: F822  (lmms-eval functions in __all__ resolve through the module __getattr__ below)
from __future__ import annotations

import importlib
from pathlib import Path, PurePosixPath

from vtc.errors import VtcError
from vtc.eval.tasks.base import (
    TaskSpec,
    find_files,
    lazy_exports,
    letters,
    load_rows,
    register_task,
    rows_with,
)

_LMMS = "lmms_eval.tasks.mlvu.utils"
# MLVU's raw question_type names that sy1998/MLVU_dev (lmms-eval's copy) spells differently.
_RAW_TYPES = {"findNeedle": "needle"}

__all__ = ["mlvu_doc_to_visual", "mlvu_doc_to_text", "mlvu_process_results", "mlvu_aggregate_results"]

__getattr__ = lazy_exports(_LMMS, {"mlvu_doc_to_text": "mlvu_doc_to_text"})


def mlvu_doc_to_visual(doc):
    return [PurePosixPath(doc["video_name"]).stem]


def mlvu_process_results(doc, results):
    d = importlib.import_module(_LMMS).mlvu_process_results(doc, results)["mlvu_percetion_score"]
    d["score"] = float(d["pred_answer"] == d["answer"])
    d["category"] = doc["task_type"]
    return {"mlvu_percetion_score": d}


def mlvu_aggregate_results(results):
    by: dict[str, list[float]] = {}
    for r in results:
        by.setdefault(r["task_type"], []).append(r["score"])
    if not by:
        return 0.0
    return sum(100.0 * sum(v) / len(v) for v in by.values()) / len(by)


def _read(src: Path) -> list[dict]:
    rows = rows_with(src, ["**/test-*.parquet", "**/*.parquet", "**/*.jsonl"], "video_name")
    if rows:
        return rows
    # MLVU's own json/<n>_<type>.json: question, candidates, answer = the right candidate's text.
    rows = []
    for f in find_files(src, ["json/*.json", "**/json/*.json"]):
        for r in load_rows(f):
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
                    "task_type": _RAW_TYPES.get(qtype, qtype),
                    "question_id": r.get("question_id", f"{f.stem}_{len(rows)}"),
                }
            )
    return rows


def _check(row: dict, data_file: Path) -> str | None:
    if row["answer"] not in letters(6):
        return (
            f"answer must be an option letter (the options are part of the question), got {row['answer']!r}"
        )
    return None


SPEC = register_task(
    TaskSpec(
        name="mlvu",
        lmms_eval="mlvu_dev",
        metric="mlvu_percetion_score",  # sic: lmms-eval's spelling
        scale=1,
        kwargs={"pre_prompt": "", "post_prompt": "\nOnly give the best option.\nBest option: ("},
        category="task_type",
        required=("video_name", "question", "answer", "task_type"),
        read=_read,
        expected="a parquet/jsonl with video_name rows (sy1998/MLVU_dev) or MLVU's json/*.json",
        check=_check,
        locate=lambda src, row: [src / row["video_name"]],
    )
)
