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
