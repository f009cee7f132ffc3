"""Video-MME on a local copy: prompts and scoring are lmms-eval's own, visuals are store ids."""

from __future__ import annotations

from lmms_eval.tasks.videomme.utils import (
    videomme_aggregate_results,
    videomme_doc_to_text,
    videomme_process_results,
)

__all__ = [
    "videomme_doc_to_visual",
    "videomme_doc_to_text",
    "videomme_process_results",
    "videomme_aggregate_results",
]


def videomme_doc_to_visual(doc):
    # The video is looked up by id in the token store; nothing is decoded.
    return [doc["videoID"]]
