"""A deterministic synthetic video-QA set whose answers depend on the pixels: what a tiny model trained by
vtc can learn, so that accuracy against visual tokens means something.

Videos are of four kinds, taken in turn: a *moving* square glides in a straight line through every
frame; a *flashing* square stays in place and is visible in only 1 to 4 of the frames; in an *order*
video one square shows in the first half of the frames and a square of another colour, elsewhere, in the
second half; in a *frequency* video a square of one colour flashes in three frames and one of another
colour, elsewhere, in one. Four options per question, the answers balanced over the options:

- ``colour`` (one frame suffices), moving and flashing videos: "What colour is the square?" red / green /
  blue / yellow.
- ``order`` (needs the frames in order), order videos: "Which colour appears first?" and "Which colour
  appears last?". One frame, or every frame without their order, shows one colour or both without
  saying which came first: at most 50%.
- ``frequency`` (needs several frames), frequency videos: "Which colour flashes more often?" and
  "Which colour flashes less often?". One frame shows one colour or none: about 50% at best.
- ``count`` (needs every frame), flashing videos: "How many frames show the square?" 1 / 2 / 3 / 4.
- ``direction`` (needs more than one frame, and where they are), moving videos: "Which way does the
  square move?" left / right / up / down.

The train and held-out splits are different videos (different seeds, positions and backgrounds).
Questions are written in vtc's local ``mcq`` format (``vtc eval mcq --data``), with the question type
as ``category``, and the training split also as LLaVA-Video-178K conversations (``vtc train --data``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 235), "yellow": (235, 215, 40)}
DIRECTIONS = ("left", "right", "up", "down")
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
COUNTS = ("1", "2", "3", "4")
QUESTIONS = {
    "colour": ("What colour is the square?", list(COLOURS)),
    "count": ("How many frames show the square?", list(COUNTS)),
    "direction": ("Which way does the square move?", list(DIRECTIONS)),
    "first": ("Which colour appears first?", list(COLOURS)),
    "last": ("Which colour appears last?", list(COLOURS)),
    "more": ("Which colour flashes more often?", list(COLOURS)),
    "less": ("Which colour flashes less often?", list(COLOURS)),
}
KINDS = ("move", "flash", "order", "often")
CATEGORY = {"first": "order", "last": "order", "more": "frequency", "less": "frequency"}
# which frames of an 8-frame video show a flashing square, per count: spread out, never adjacent
_FLASHES = {1: (3,), 2: (1, 5), 3: (0, 3, 6), 4: (0, 2, 4, 6)}
LETTERS = "ABCD"
SIDE, NOISE = 48, 12  # the square's side (px of 128x96) and the background noise amplitude


def render_flashes(colour: str, count: int, seed: int, n_frames: int = 8, size=(128, 96), side: int = SIDE):
    """uint8 frames [n_frames, H, W, 3]: a still square visible in ``count`` frames (n_frames must be 8, so
    that `vtc extract --frames 8` samples every frame and sees every flash)."""
    if n_frames != 8:
        raise ValueError("flashing videos have 8 frames (extract them with --frames 8)")
    return _still_squares([(colour, _FLASHES[count])], seed, n_frames, size, side)


def render_order(first: str, last: str, seed: int, n_frames: int = 8, size=(128, 96), side: int = SIDE):
    """uint8 frames [n_frames, H, W, 3]: a ``first`` square in the first half of the frames, then a ``last``
    one, at another random place, in the second half."""
    half = n_frames // 2
    return _still_squares([(first, range(half)), (last, range(half, n_frames))], seed, n_frames, size, side)


def render_often(more: str, less: str, seed: int, n_frames: int = 8, size=(128, 96), side: int = SIDE):
    """uint8 frames [8, H, W, 3]: a ``more`` square in frames 0, 3 and 6, a ``less`` one, at another random
    place, in one other frame (1, 2, 4, 5 or 7, drawn from the seed)."""
    if n_frames != 8:
        raise ValueError("frequency videos have 8 frames (extract them with --frames 8)")
    once = (1, 2, 4, 5, 7)[int(np.random.default_rng(seed + 7).integers(5))]
    return _still_squares([(more, _FLASHES[3]), (less, (once,))], seed, n_frames, size, side)


def _still_squares(squares: list, seed: int, n_frames: int, size, side: int) -> np.ndarray:
    """uint8 frames [n_frames, H, W, 3]: noise, and for each (colour, frames shown) a square at its own
    random place, in those frames."""
    rng = np.random.default_rng(seed)
    w, h = size
    background = (rng.random((h, w, 3)) * NOISE).astype(np.uint8)
    frames = np.repeat(background[None], n_frames, axis=0)
    for colour, shown in squares:
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        for k in shown:
            frames[k, y : y + side, x : x + side] = COLOURS[colour]
    return frames


def render(colour: str, direction: str, seed: int, n_frames: int = 8, size=(128, 96), side: int = SIDE):
    """uint8 frames [n_frames, H, W, 3]: the square moves ``direction`` across about 60% of the frame."""
    rng = np.random.default_rng(seed)
    w, h = size
    background = (rng.random((h, w, 3)) * NOISE).astype(np.uint8)
    dx, dy = _STEP[direction]
    travel = int(0.6 * ((w if dx else h) - side))
    # start so the whole path stays inside the frame; the cross-axis position is random
    lo_x, hi_x = (travel if dx < 0 else 0), (w - side - (travel if dx > 0 else 0))
    lo_y, hi_y = (travel if dy < 0 else 0), (h - side - (travel if dy > 0 else 0))
    x0, y0 = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
    frames = np.repeat(background[None], n_frames, axis=0)
    for k in range(n_frames):
        f = k / max(1, n_frames - 1)
        x, y = x0 + round(dx * travel * f), y0 + round(dy * travel * f)
        frames[k, y : y + side, x : x + side] = COLOURS[colour]
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = 8, qscale: str | None = "2") -> Path:
    """MPEG-4 of uint8 frames [T, H, W, 3]; ``qscale`` 2 is near-lossless (the colours of the QA set must
    survive the codec), None the encoder's default quality."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if qscale is not None:
            stream.options = {"qscale": qscale}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _split(n: int, seed: int) -> list[tuple[str, str, str]]:
    """n (kind, colour, direction / count / second colour) triples, the four kinds in turn; within any 16
    consecutive (before the seeded shuffle) every colour, direction and count appears equally often, and
    colour and the other answer are paired differently in each block of 4 of a kind, so neither predicts
    the other (a two-colour video's colours always differ)."""
    colours = list(COLOURS)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        j = i // len(KINDS)
        if kind in ("order", "often"):
            out.append((kind, colours[j % 4], colours[(j % 4 + 1 + (j // 4) % 3) % 4]))
        else:
            others = DIRECTIONS if kind == "move" else COUNTS
            out.append((kind, colours[j % 4], others[(j + j // 4) % 4]))
    order = np.random.default_rng(seed).permutation(n)
    return [out[k] for k in order]


# each kind's frames from its (colour, direction / count / second colour) and seed
RENDER = {
    "move": render,
    "flash": lambda colour, count, seed: render_flashes(colour, int(count), seed),
    "order": render_order,
    "often": render_often,
}


def rows_for(video_id: str, kind: str, colour: str, other: str) -> list[dict]:
    """The two mcq rows of one video: its colour, and its direction (moving) or count (flashing); or,
    for a two-colour video, which came first and which last (order), or which flashed more and which less
    often (frequency)."""
    if kind == "order":
        truth = {"first": colour, "last": other}
    elif kind == "often":
        truth = {"more": colour, "less": other}
    else:
        truth = {"colour": colour, "direction" if kind == "move" else "count": other}
    return [
        {
            "video": video_id,
            "question": QUESTIONS[q][0],
            "options": QUESTIONS[q][1],
            "answer": LETTERS[QUESTIONS[q][1].index(value)],
            "category": CATEGORY.get(q, q),
        }
        for q, value in truth.items()
    ]


def make_synthetic_qa(
    out_dir: str | Path, n_train: int = 64, n_test: int = 32, seed: int = 0
) -> dict[str, Path]:
    """Write ``videos/`` (8 frames each: extract with ``--frames 8``) and the question files; returns
    their paths. Deterministic for a seed, and a second call with the same arguments reuses what is there."""
    from vtc.eval.tasks import write_jsonl

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    paths = {"videos": out / "videos"}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 1_000_000)):
        rows = []
        for i, (kind, colour, other) in enumerate(_split(n, seed + offset)):
            vid = f"syn_{split}_{i:04d}"
            p = out / "videos" / f"{vid}.mp4"
            if not p.exists():
                write_video(p, RENDER[kind](colour, other, seed + offset + i))
            rows += rows_for(vid, kind, colour, other)
        paths[split] = write_jsonl(out / split / "questions.jsonl", rows)
    paths["train_178k"] = write_llava_video(out / "train_178k.json", paths["train"])
    return paths


def write_llava_video(path: Path, mcq_file: Path) -> Path:
    """The same questions as LLaVA-Video-178K conversations (one video per entry, one turn per question)."""
    from vtc.eval.tasks.mcq import mcq_doc_to_text

    by_video: dict[str, list[dict]] = {}
    for line in Path(mcq_file).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        by_video.setdefault(row["video"], []).append(row)
    post = "\nAnswer with the option's letter from the given choices directly."
    entries = []
    for vid, rows in by_video.items():
        turns = []
        for k, row in enumerate(rows):
            prompt = mcq_doc_to_text(row, {"post_prompt": post})
            turns.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + prompt})
            turns.append({"from": "gpt", "value": row["answer"]})
        entries.append({"id": vid, "video": f"{vid}.mp4", "conversations": turns})
    path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return path
