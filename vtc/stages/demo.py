"""`vtc demo`: the whole pipeline offline, on synthetic videos and tiny random checkpoints.

extract → compress (none, pool, dyntok) → eval on a 3-question local task in Video-MME format.
The numbers mean nothing (random weights); that every stage runs, and the token accounting, do.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

DEMO_METHODS = [("none", {}), ("pool", {"stride": "3"}), ("dyntok", {"threshold": "0.6"})]

# One question per video, one per Video-MME duration class.
DEMO_QUESTIONS = [
    (
        "demo_short",
        "short",
        "Which way does the square move?",
        ["A. Left", "B. Right", "C. Up", "D. Down"],
        "B",
    ),
    (
        "demo_medium",
        "medium",
        "What colour is the square?",
        ["A. Red", "B. Green", "C. Blue", "D. White"],
        "A",
    ),
    ("demo_long", "long", "How many squares are there?", ["A. 1", "B. 2", "C. 3", "D. 4"], "B"),
]


def synth_video(
    path: Path, n_frames: int, seed: int, size: tuple[int, int] = (160, 120), fps: int = 8
) -> Path:
    """A deterministic clip: coloured squares moving over a textured background (H.264 or MPEG-4)."""
    import av

    rng = np.random.default_rng(seed)
    w, h = size
    background = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    colours = rng.integers(64, 256, size=(2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(n_frames):
            img = background.copy()
            for j, c in enumerate(colours[: 1 + seed % 2]):
                x = (10 + 4 * k + 40 * j) % (w - 24)
                y = (20 + 30 * j + (k * seed) % 20) % (h - 24)
                img[y : y + 24, x : x + 24] = c
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_demo_task(task_dir: Path) -> Path:
    from vtc.eval.tasks import videomme_row, write_jsonl

    rows = [
        videomme_row(vid, f"{i:03d}-1", duration, q, options, answer)
        for i, (vid, duration, q, options, answer) in enumerate(DEMO_QUESTIONS)
    ]
    return write_jsonl(task_dir / "questions.jsonl", rows)


def demo(workdir: str | Path = "vtc-demo", frames: int = 8, quiet: bool = False, console=None) -> list[dict]:
    from vtc.encoders.tiny import build_tiny_checkpoints
    from vtc.stages.compress import compress
    from vtc.stages.evaluate import evaluate
    from vtc.stages.extract import extract

    say = (lambda *a: None) if quiet or console is None else console.print
    t0 = time.perf_counter()
    wd = Path(workdir)
    (wd / "videos").mkdir(parents=True, exist_ok=True)
    say(f"[bold]1/4[/] tiny random checkpoints and synthetic videos in {wd}")
    ckpt = build_tiny_checkpoints(wd / "models")
    for i, (vid, *_rest) in enumerate(DEMO_QUESTIONS):
        p = wd / "videos" / f"{vid}.mp4"
        if not p.exists():
            synth_video(p, n_frames=16 * (i + 1), seed=i + 1)
    write_demo_task(wd / "task")

    say("[bold]2/4[/] vtc extract (tower of the tiny LLaVA-OV checkpoint)")
    s = extract(
        [str(wd / "videos")],
        wd / "feats.zarr",
        model=str(ckpt["llava_ov"]),
        frames=frames,
        quiet=quiet,
        console=console,
    )
    if s.failed:
        raise RuntimeError(f"demo extract failed: {s.failed}")

    results = []
    for method, params in DEMO_METHODS:
        say(
            f"[bold]3/4[/] vtc compress --method {method} {' '.join(f'--set {k}={v}' for k, v in params.items())}"
        )
        c = compress(
            wd / "feats.zarr", method, params, out=wd / f"tokens-{method}.zarr", quiet=quiet, console=console
        )
        say(f"[bold]4/4[/] vtc eval videomme (local, 3 questions) on {method}")
        r = evaluate(
            "videomme", c.out, str(ckpt["llava_ov"]), data=wd / "task", out=wd / f"eval-{method}", quiet=quiet
        )
        results.append(r)
    if not quiet and console is not None:
        from vtc.cli.evaluate import results_table

        console.print(results_table(results, title="vtc demo — tiny random LLaVA-OV, 3 questions"))
        console.print(
            f"demo finished in {time.perf_counter() - t0:.1f} s; artifacts in {wd}", highlight=False
        )
    return results
