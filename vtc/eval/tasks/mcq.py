"""vtc's generic multiple-choice format for custom datasets (``mcq``).

One row per question::

    {"video": "clip_0007", "question": "What does the person pick up?",
     "options": ["a cup", "a phone", "a book"], "answer": "B", "category": "objects"}

``video`` is the store id (a path's stem also works), ``options`` the choices' text without
letters, ``answer`` the right option's letter, ``category`` optional. The prompt is LLaVA's
multiple-choice prompt (as in lmms-eval's Video-MME and LongVideoBench tasks)::

    <question>
    A. <option 0>
    B. <option 1>
    ...
    Answer with the option's letter from the given choices directly.

Scoring rule: the prediction is the **first standalone option letter** in the answer — a capital
letter among the question's option letters that is not part of a word ("B", "(B)", "B.", "B) a
phone", "The answer is B" all give B; "Bottle" gives nothing). No letter → wrong (no random
guess, unlike MMMU-style parsers, so a run is deterministic). ``mcq_accuracy`` is the percentage
of questions whose prediction equals ``answer``; per sample, ``score`` and ``category``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from vtc.eval.tasks.base import LETTER_POST, TaskSpec, letters, register_task, rows_with

__all__ = [
    "mcq_doc_to_visual",
    "mcq_doc_to_text",
    "mcq_process_results",
    "mcq_aggregate_results",
    "mcq_parse",
]


def mcq_doc_to_visual(doc):
    # the store looks the id up as given, then by its stem (so a path to the video works too)
    return [str(doc["video"])]


def mcq_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    lines = [doc["question"].strip()] + [
        f"{string.ascii_uppercase[i]}. {o}" for i, o in enumerate(doc["options"])
    ]
    return kwargs.get("pre_prompt", "") + "\n".join(lines) + kwargs.get("post_prompt", "")


def mcq_parse(answer: str, n_options: int) -> str:
    """The first standalone option letter (A.. up to n_options) in ``answer``; '' if there is none."""
    letters = string.ascii_uppercase[:n_options]
    m = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", answer)
    return m.group(1) if m else ""


def mcq_process_results(doc, results):
    pred = mcq_parse(results[0], len(doc["options"]))
    return {
        "mcq_accuracy": {
            "pred": pred,
            "answer": doc["answer"],
            "score": float(pred == doc["answer"]),
            "category": doc.get("category"),
        }
    }


def mcq_aggregate_results(results):
    return 100.0 * sum(r["score"] for r in results) / len(results) if results else 0.0


def _read(src: Path) -> list[dict]:
    rows = rows_with(src, ["*.jsonl", "*.json", "*.csv", "**/*.jsonl", "**/*.json"], "options")
    for r in rows:
        if isinstance(r["options"], str):  # a CSV cell: options separated by "|"
            r["options"] = [o.strip() for o in r["options"].split("|")]
        if not r.get("category"):
            r.pop("category", None)
    return rows


def _check(row: dict, data_file: Path) -> str | None:
    if not isinstance(row["options"], list) or not 2 <= len(row["options"]) <= 26:
        return "options must be a list of 2 to 26 choices"
    if row["answer"] not in letters(len(row["options"])):
        return f"answer {row['answer']!r} is not one of the {len(row['options'])} option letters"
    return None


SPEC = register_task(
    TaskSpec(
        name="mcq",
        lmms_eval="(none: vtc's generic multiple-choice format)",
        metric="mcq_accuracy",
        scale=1,
        kwargs={"pre_prompt": "", "post_prompt": LETTER_POST},
        category="category",
        required=("video", "question", "options", "answer"),
        read=_read,
        expected="one *.jsonl/*.json/*.csv with video, question, options, answer",
        check=_check,
    )
)
