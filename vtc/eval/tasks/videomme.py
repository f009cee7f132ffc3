"""Video-MME on a local copy, without and with subtitles: lmms-eval's prompts and scoring, store ids.

``videomme`` re-uses lmms-eval's ``videomme_doc_to_text``, ``videomme_process_results`` and
``videomme_aggregate_results`` unchanged. ``videomme_w_subtitle`` re-uses its scoring and subtitle
parser (``load_subtitles``) but not ``videomme_doc_to_text_subtitle``, which opens the video with cv2
for its fps and frame count: here those come from the row's ``fps`` and ``total_frames`` columns
(``vtc prepare`` reads them with the same cv2 properties), and the ``.srt`` files from the
``subtitles/`` folder beside the question file. The selection rule is lmms-eval's: the subtitles
whose frame span [int(start·fps), int(end·fps)) holds one of ``frame_num`` = 32 frames at
``np.linspace(0, total_frames - 1, 32)``, in set order, with the ``<font color="white" size=".72c">``
text of each.
"""

# ruff: noqa: F822  (lmms-eval functions in __all__ resolve through the module __getattr__ below)
from __future__ import annotations

import importlib
import os
import re
import shutil
from pathlib import Path

import numpy as np

from vtc.eval.tasks.base import LETTER_POST, TaskSpec, lazy_exports, letters, register_task, rows_with

_LMMS = "lmms_eval.tasks.videomme.utils"

__all__ = [
    "videomme_doc_to_visual",
    "videomme_doc_to_text",
    "videomme_process_results",
    "videomme_aggregate_results",
    "videomme_w_subtitle_doc_to_visual",
    "videomme_w_subtitle_doc_to_text",
    "videomme_w_subtitle_process_results",
    "videomme_w_subtitle_aggregate_results",
    "subtitle_text",
]

__getattr__ = lazy_exports(
    _LMMS,
    {
        "videomme_doc_to_text": "videomme_doc_to_text",
        "videomme_process_results": "videomme_process_results",
        "videomme_aggregate_results": "videomme_aggregate_results",
        # the subtitle variant scores as the plain one (its prompt is written below)
        "videomme_w_subtitle_process_results": "videomme_process_results",
        "videomme_w_subtitle_aggregate_results": "videomme_aggregate_results",
    },
)

_FONT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')


def videomme_doc_to_visual(doc):
    # The video is looked up by id in the token store; nothing is decoded.
    return [doc["videoID"]]


def subtitle_text(srt_path: str, fps: float, total_frames: int, frame_num: int = 32) -> str:
    """The subtitle lines lmms-eval's ``videomme_doc_to_text_subtitle`` shows for ``frame_num`` frames."""
    subtitles = importlib.import_module(_LMMS).load_subtitles(srt_path)
    spans = [(int(s * fps), int(e * fps), text) for (s, e), text in subtitles.items()]
    if frame_num == -1:
        frame_num = total_frames
    sampled = np.linspace(0, total_frames - 1, frame_num, dtype=int).tolist()
    picked = list(
        {i for f in sampled for i, (s, e, _) in enumerate(spans) if s <= f < e}
    )  # lmms-eval's set order
    lines = []
    for i in picked:
        found = _FONT.findall(spans[i][2])
        if found:
            lines.append(found[0])
    return "\n".join(lines)


def videomme_w_subtitle_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    srt = os.path.join(kwargs.get("subtitle_dir", ""), f"{doc['videoID']}.srt")
    if os.path.exists(srt):
        subtitle = subtitle_text(
            srt, float(doc["fps"]), int(doc["total_frames"]), kwargs.get("frame_num", 32)
        )
    else:
        subtitle = "No subtitles available"
    option_prompt = (
        "Select the best answer to the following multiple-choice question based on the video and the "
        "subtitles. Respond with only the letter (A, B, C, or D) of the correct option."
    )
    question = doc["question"] + "\n" + "\n".join(doc["options"])
    return (
        "This video's subtitles are listed below: \n"
        + subtitle
        + "\n"
        + option_prompt
        + "\n"
        + question
        + "\n"
        + "The best answer is:"
    )


videomme_w_subtitle_doc_to_visual = videomme_doc_to_visual

# lmms-eval/Video-MME's columns; the subtitle variant reads the same rows
_COLUMNS = (
    "videoID",
    "question_id",
    "duration",
    "domain",
    "sub_category",
    "task_type",
    "question",
    "options",
    "answer",
)


def subtitle_dir(data_file: Path) -> Path:
    """Where a local Video-MME copy keeps its ``<videoID>.srt`` files: ``subtitles/`` beside the questions."""
    return data_file.parent / "subtitles"


def _read(src: Path) -> list[dict]:
    return rows_with(
        src,
        ["videomme/test-*.parquet", "**/test-*.parquet", "**/*.parquet", "**/*.jsonl", "**/*.json"],
        "videoID",
    )


def _check(row: dict, data_file: Path) -> str | None:
    if row["answer"] not in letters(len(row["options"])):
        return f"answer {row['answer']!r} is not one of the {len(row['options'])} option letters"
    return None


def _check_w_subtitle(row: dict, data_file: Path) -> str | None:
    problem = _check(row, data_file)
    if not problem and (subtitle_dir(data_file) / f"{row['videoID']}.srt").exists():
        if not row.get("fps") or not row.get("total_frames"):
            return "has a subtitle file but no fps/total_frames (needed to pick the subtitles of 32 frames)"
    return problem


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


_SHARED = dict(
    metric="videomme_perception_score",
    scale=1,
    category="domain",
    required=_COLUMNS,
    read=_read,
    expected="videomme/test-*.parquet with videoID rows; videos in data/, subtitles in subtitle/",
    per_duration=True,
    data_name="videomme",
    stage=_stage_subtitles,
)
SPEC = register_task(
    TaskSpec(
        name="videomme",
        lmms_eval="videomme",
        kwargs={"pre_prompt": "", "post_prompt": LETTER_POST},
        check=_check,
        **_SHARED,
    )
)
SPEC_W_SUBTITLE = register_task(
    TaskSpec(
        name="videomme_w_subtitle",
        lmms_eval="videomme_w_subtitle",
        # lmms-eval's w_subtitle prompt ends with "The best answer is:" and ignores post_prompt.
        kwargs={"frame_num": 32, "pre_prompt": "", "post_prompt": ""},
        check=_check_w_subtitle,
        local_kwargs=lambda data_file: {"subtitle_dir": str(subtitle_dir(data_file))},
        **_SHARED,
    )
)
