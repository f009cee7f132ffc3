"""NExT-QA multiple choice on a local copy, as lmms-eval's ``nextqa_mc_test`` (``lmms-eval/NExTQA``, MC).

lmms-eval's ``nextqa/utils.py`` cannot be imported offline (it downloads nltk corpora at import for
the open-ended WUPS metric), so the two functions the MC task uses are written here to match it:
the prompt is ``question`` then ``A. a0`` ... ``E. a4``, one per line, with no pre/post prompt (the
task YAML sets none); scoring parses the answer with MMMU's ``parse_multi_choice_response`` (the
same function, imported from lmms-eval's ``_task_utils.mmmu_mcq_utils``: "(B)", then "B ", then
"B.", then option text in answers longer than 5 words; several candidates → the last one; none →
a random letter) and compares it with ``OPTIONS[answer]``. lmms-eval's ``exact_match`` is the mean
of those booleans, a fraction in [0, 1]; here it is the same mean, with the per-sample value a dict
(``score``, ``category`` = the question ``type``: CW, CH, TN, TC, DL, DO, DC, ...).
"""

from __future__ import annotations

from pathlib import Path

from vtc.eval.tasks.base import TaskSpec, register_task, rows_with

__all__ = [
    "nextqa_doc_to_visual",
    "nextqa_doc_to_text",
    "nextqa_doc_to_target",
    "nextqa_process_results",
    "nextqa_aggregate_results",
]

OPTIONS = ["A", "B", "C", "D", "E"]


def nextqa_doc_to_visual(doc):
    # lmms-eval: NExTVideo/<video>.mp4; the store id is the video number as text
    return [str(doc["video"])]


def nextqa_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    question = "\n".join(
        [doc["question"].strip()] + [f"{OPTIONS[i]}. {doc[f'a{i}'].strip()}" for i in range(5)]
    )
    if kwargs.get("pre_prompt"):
        question = f"{kwargs['pre_prompt']}{question}"
    if kwargs.get("post_prompt"):
        question = f"{question}{kwargs['post_prompt']}"
    return question


def nextqa_doc_to_target(doc):
    return doc["answer"]


def nextqa_process_results(doc, results):
    from lmms_eval.tasks._task_utils.mmmu_mcq_utils import parse_mmmu_multi_choice_response

    index2ans = {OPTIONS[i]: doc[f"a{i}"].strip() for i in range(5)}
    parsed = parse_mmmu_multi_choice_response(results[0], OPTIONS, index2ans)
    correct = parsed == OPTIONS[int(doc["answer"])]
    return {"exact_match": {"score": float(correct), "pred": parsed, "category": doc["type"]}}


def nextqa_aggregate_results(results):
    return sum(r["score"] for r in results) / len(results) if results else 0.0


def _read(src: Path) -> list[dict]:
    rows = rows_with(src, ["MC/test-*.parquet", "**/MC/test-*.parquet", "**/test.csv", "**/*.csv"], "a0")
    for r in rows:
        r["answer"] = int(r["answer"])
        r["video"] = str(r["video"])
        for i in range(5):
            r[f"a{i}"] = str(r[f"a{i}"])
    return rows


def _check(row: dict, data_file: Path) -> str | None:
    if not isinstance(row["answer"], int) or not 0 <= row["answer"] <= 4:
        return f"answer must be an option index 0-4, got {row['answer']!r}"
    return None


SPEC = register_task(
    TaskSpec(
        name="nextqa",
        lmms_eval="nextqa_mc_test",
        metric="exact_match",
        scale=100,
        target=None,
        category="type",
        required=("video", "question", "a0", "a1", "a2", "a3", "a4", "answer", "type"),
        read=_read,
        expected="MC/test-*.parquet or NExT-QA's test.csv (columns video, question, a0..a4, answer, type)",
        check=_check,
    )
)
