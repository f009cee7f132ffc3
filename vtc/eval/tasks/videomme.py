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

from __future__ import annotations

import os
import re

import numpy as np
from lmms_eval.tasks.videomme.utils import (
    load_subtitles,
    videomme_aggregate_results,
    videomme_doc_to_text,
    videomme_process_results,
)

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

_FONT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')


def videomme_doc_to_visual(doc):
    # The video is looked up by id in the token store; nothing is decoded.
    return [doc["videoID"]]


def subtitle_text(srt_path: str, fps: float, total_frames: int, frame_num: int = 32) -> str:
    """The subtitle lines lmms-eval's ``videomme_doc_to_text_subtitle`` shows for ``frame_num`` frames."""
    spans = [(int(s * fps), int(e * fps), text) for (s, e), text in load_subtitles(srt_path).items()]
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
videomme_w_subtitle_process_results = videomme_process_results
videomme_w_subtitle_aggregate_results = videomme_aggregate_results
