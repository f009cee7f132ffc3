"""Question-answer files for `vtc train`: LLaVA-Video-178K conversations, or vtc's local ``mcq`` rows.

LLaVA-Video-178K (JSON list or JSONL)::

    {"id": "v_abc", "video": "academic/v_abc.mp4",
     "conversations": [{"from": "human", "value": "<image>\\nWhat happens?"}, {"from": "gpt", "value": "..."},
                       {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "..."}]}

Human and gpt turns alternate, human first; the ``<image>``/``<video>`` tag of the first turn marks where
the video goes, which in vtc is always before the first question (as LLaVA-OV's evaluation puts it).
``mcq`` rows (``video, question, options, answer``) become one turn: the prompt ``vtc eval mcq`` shows
(question, lettered options, "Answer with the option's letter...") and the answer letter, so a model is
trained on exactly the prompt it is evaluated with.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from vtc.errors import VtcError

_TAG = re.compile(r"^\s*<(image|video)>\s*\n?|\n?\s*<(image|video)>\s*$")


@dataclass(frozen=True)
class Sample:
    video: str  # the video as the file names it (an id, a file name or a path)
    turns: tuple[tuple[str, str], ...]  # (user text, assistant answer), the video before the first
    alt_ids: tuple[str, ...] = ()  # other names to look the video up by (the entry's id)
    category: str | None = None
    where: str = ""  # file:line, for messages
    n_options: int | None = None  # mcq rows: how many lettered options (for scoring held-out answers)


@dataclass
class QASet:
    samples: list[Sample]
    path: str
    skipped: list[str] = field(default_factory=list)  # why entries were not usable, one line each


def read_qa(path: str | Path) -> QASet:
    """Every usable sample of a QA file; an unusable entry is skipped and named in ``skipped``."""
    path = Path(path)
    if path.is_dir():
        from vtc.eval.tasks import find_data_file

        path = find_data_file(path)
    if not path.is_file():
        raise VtcError(f"training data {path} does not exist")
    records = _records(path)
    out = QASet(samples=[], path=str(path))
    for where, rec in records:
        try:
            out.samples.append(_sample(rec, where))
        except ValueError as e:
            out.skipped.append(f"{where}: {e}")
    if not out.samples:
        why = f" (first problem: {out.skipped[0]})" if out.skipped else ""
        raise VtcError(f"{path} holds no usable question-answer entry{why}")
    return out


def _records(path: Path) -> list[tuple[str, object]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise VtcError(f"{path} is not UTF-8 text") from None
    if path.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        for r in rows:
            r["options"] = (
                json.loads(r["options"]) if str(r.get("options", "")).startswith("[") else r.get("options")
            )
        return [(f"{path.name}:{i + 2}", r) for i, r in enumerate(rows)]
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise VtcError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        return [(f"{path.name}[{i}]", r) for i, r in enumerate(data)]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"{path.name}:{n}", json.loads(line)))
        except json.JSONDecodeError as e:
            out.append((f"{path.name}:{n}", ValueError(f"not JSON ({e.msg})")))
    return out


def _sample(rec, where: str) -> Sample:
    if isinstance(rec, ValueError):
        raise rec
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if "conversations" in rec:
        return _conversation(rec, where)
    if {"question", "options", "answer"} <= set(rec):
        from vtc.eval.tasks import LETTER_POST
        from vtc.eval.tasks.mcq import mcq_doc_to_text

        if not rec.get("video"):
            raise ValueError("no 'video'")
        options = rec["options"]
        if not isinstance(options, list) or not 2 <= len(options) <= 26:
            raise ValueError("'options' must be a list of 2 to 26 choices")
        prompt = mcq_doc_to_text(rec, {"post_prompt": LETTER_POST})
        answer = str(rec["answer"]).strip()
        return Sample(str(rec["video"]), ((prompt, answer),), (), rec.get("category"), where, len(options))
    raise ValueError("neither LLaVA-Video-178K ('conversations') nor mcq ('question', 'options', 'answer')")


def _conversation(rec: dict, where: str) -> Sample:
    conv = rec["conversations"]
    video = rec.get("video") or rec.get("id")
    if not video:
        raise ValueError("no 'video'")
    if not isinstance(conv, list) or not conv or len(conv) % 2:
        raise ValueError("'conversations' must alternate human and gpt turns, human first")
    turns = []
    for k in range(0, len(conv), 2):
        h, g = conv[k], conv[k + 1]
        if not (isinstance(h, dict) and isinstance(g, dict)) or (h.get("from"), g.get("from")) != (
            "human",
            "gpt",
        ):
            raise ValueError(f"turn {k // 2 + 1} is not a human turn followed by a gpt turn")
        question = _TAG.sub("", str(h.get("value", ""))).strip()
        turns.append((question, str(g.get("value", "")).strip()))
    alt = (str(rec["id"]),) if rec.get("id") else ()
    return Sample(str(video), tuple(turns), alt, rec.get("category"), where)
