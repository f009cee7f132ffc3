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

# ruff: noqa: F822  (lmms-eval functions in __all__ resolve through the module __getattr__ below)
from __future__ import annotations

import importlib
from pathlib import Path

from vtc.eval.tasks.base import (
    LETTER_POST,
    TaskSpec,
    find_files,
    lazy_exports,
    load_rows,
    register_task,
    rows_with,
)

_LMMS = "lmms_eval.tasks.egoschema.utils"

__all__ = [
    "egoschema_doc_to_visual",
    "egoschema_doc_to_text",
    "egoschema_doc_to_target",
    "egoschema_process_results",
    "egoschema_aggregate_results",
]

__getattr__ = lazy_exports(
    _LMMS,
    {
        "egoschema_doc_to_text": "egoschema_doc_to_text",
        "egoschema_doc_to_target": "egoschema_doc_to_answer",
        "egoschema_aggregate_results": "egoschema_aggregate_score",
    },
)


def egoschema_doc_to_visual(doc):
    return [str(doc["video_idx"])]


def egoschema_process_results(doc, results):
    d = importlib.import_module(_LMMS).egoschema_process_results_generation(doc, results)["score"]
    d["score"] = float(str(d["ground_truth"]) == str(d["pred"]))
    return {"score": d}


def _read(src: Path) -> list[dict]:
    rows = rows_with(src, ["Subset/*.parquet", "**/Subset/*.parquet"], "video_idx")
    if rows:
        return rows
    # EgoSchema's github layout: questions.json (q_uid, question, option 0..4) + subset_answers.json.
    qs = find_files(src, ["questions.json", "**/questions.json"])
    ans = find_files(src, ["subset_answers.json", "**/subset_answers.json"])
    if not qs or not ans:
        return []
    answers = {a["_key"]: a["_value"] for a in load_rows(ans[0])}
    return [
        {
            "question_idx": q["q_uid"],
            "question": q["question"],
            "video_idx": q["q_uid"],
            "option": [f"{chr(65 + i)}. {q[f'option {i}']}" for i in range(5)],
            "answer": str(answers[q["q_uid"]]),
        }
        for q in load_rows(qs[0])
        if q["q_uid"] in answers
    ]


def _check(row: dict, data_file: Path) -> str | None:
    if len(row["option"]) != 5:
        return f"option must list 5 choices ('A. ...' to 'E. ...'), got {len(row['option'])}"
    if str(row["answer"]) not in [str(i) for i in range(5)]:
        return f"answer must be the option index 0-4, got {row['answer']!r}"
    return None


SPEC = register_task(
    TaskSpec(
        name="egoschema",
        lmms_eval="egoschema_subset",
        metric="score",
        scale=100,
        target=None,
        kwargs={"pre_prompt": "", "post_prompt": LETTER_POST},
        category=None,
        required=("video_idx", "question", "option", "answer"),
        read=_read,
        expected="Subset/*.parquet or questions.json + subset_answers.json; videos in videos/",
        check=_check,
    )
)
