"""EgoSchema on a local copy, as lmms-eval's ``egoschema_subset`` (the 500 questions with public answers).

The full set (``egoschema``) is scored only by EgoSchema's web server; the subset
(``lmms-eval/egoschema``, config ``Subset``) carries ``answer``, so it runs offline. Prompt
(``egoschema_doc_to_text``: question, then the 5 ``option`` strings "A. ..." to "E. ...", then
"Answer with the option's letter from the given choices directly.") and scoring
(``egoschema_process_results_generation``: MMMU-style parse — "(B)", "B ", "B." — the earliest
match; option text in long answers; a random letter when nothing matches — mapped to an index and
compared with ``answer``; ``egoschema_aggregate_score``: a fraction in [0, 1]) are lmms-eval's.
The per-sample ``score`` dict gains ``score``; lmms-eval's ``submission`` entry is dropped.
EgoSchema has no categories. Store ids: ``video_idx`` (the question's uid, one clip per question).
"""

from __future__ import annotations

from lmms_eval.tasks.egoschema.utils import (
    egoschema_aggregate_score,
    egoschema_doc_to_answer,
    egoschema_doc_to_text,
    egoschema_process_results_generation,
)

__all__ = [
    "egoschema_doc_to_visual",
    "egoschema_doc_to_text",
    "egoschema_doc_to_target",
    "egoschema_process_results",
    "egoschema_aggregate_results",
]

egoschema_doc_to_target = egoschema_doc_to_answer
egoschema_aggregate_results = egoschema_aggregate_score


def egoschema_doc_to_visual(doc):
    return [str(doc["video_idx"])]


def egoschema_process_results(doc, results):
    d = egoschema_process_results_generation(doc, results)["score"]
    d["score"] = float(str(d["ground_truth"]) == str(d["pred"]))
    return {"score": d}
