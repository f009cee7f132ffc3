"""Perception Test (multiple choice, validation) on a local copy, as lmms-eval's ``perceptiontest_val_mc``.

The validation split (``lmms-eval/PerceptionTest_Val``, config ``mc_question_val``) is the one with
answers; lmms-eval's test split only writes a submission file. Prompt
(``perceptiontest_val_doc_to_text``: question, ``A./B./C.`` options, "Answer with the option's
letter from the given choices directly.") and scoring (``perceptiontest_val_process_results_mc``:
the first standalone A-D in the answer against ``answer_id``; ``perceptiontest_val_aggregate_accuracy``:
a fraction in [0, 1]) are lmms-eval's. Per sample, ``score`` and ``category`` (= ``area``: memory,
abstraction, physics, semantics) are added. Store ids: ``video_name`` (``video_<n>``).
"""

from __future__ import annotations

from lmms_eval.tasks.perceptiontest.val.utils import (
    perceptiontest_val_aggregate_accuracy,
    perceptiontest_val_doc_to_answer,
    perceptiontest_val_doc_to_text,
    perceptiontest_val_process_results_mc,
)

__all__ = [
    "perceptiontest_doc_to_visual",
    "perceptiontest_doc_to_text",
    "perceptiontest_doc_to_target",
    "perceptiontest_process_results",
    "perceptiontest_aggregate_results",
]

perceptiontest_doc_to_text = perceptiontest_val_doc_to_text
perceptiontest_doc_to_target = perceptiontest_val_doc_to_answer
perceptiontest_aggregate_results = perceptiontest_val_aggregate_accuracy


def perceptiontest_doc_to_visual(doc):
    return [str(doc["video_name"])]


def perceptiontest_process_results(doc, results):
    d = perceptiontest_val_process_results_mc(doc, results)["accuracy"]
    d["score"] = float(d["correct"])
    d["category"] = doc["area"]
    return {"accuracy": d}
