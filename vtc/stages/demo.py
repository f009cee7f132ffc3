"""`vtc demo`: the whole pipeline offline, on synthetic videos and a tiny model that vtc trains.

synthetic video-QA (colour / count / direction of a square, vtc.video.synthetic) → extract → train the
tiny LLaVA-OV's projector and LLM on cached tokens (pooled at strides 3, 6 and 9, one drawn per batch)
→ compress with several methods → eval the held-out questions on each, with the trained adapter.
The accuracies are a real model's on a real (if small) task: what each reduction costs, per question type.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# (method, its --set values); --quick keeps the first three
DEMO_METHODS = [
    ("none", {}),
    ("pool", {"stride": "9"}),
    ("vqtoken", {"k": "32"}),
    ("pool", {"stride": "3"}),
    ("dyntok", {}),
    ("dycoke", {}),
    ("uniform", {"ratio": "0.25"}),
]
# The tiny model learns from the pixels only with a wider initialisation than Qwen2's 0.02 (see
# tests/test_train_learns.py); training: 120 steps of 8 samples, AdamW 3e-3.
LEARNABLE = {"initializer_range": 0.1}
TRAIN = {"steps": 120, "batch_size": 8, "lr": 3e-3, "warmup": 0.05}


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


def demo(
    workdir: str | Path = "vtc-demo",
    quick: bool = False,
    untrained: bool = True,
    quiet: bool = False,
    console=None,
) -> list[dict]:
    """Run the demo; returns one results dict per evaluated method (``"adapter"`` None for the untrained
    reference row). Re-running reuses what is there (videos, features, the trained run, answers)."""
    from vtc.encoders.tiny import build_tiny_llava_ov
    from vtc.stages.compress import compress
    from vtc.stages.evaluate import evaluate
    from vtc.stages.extract import extract
    from vtc.stages.train import TrainOptions, train
    from vtc.video.synthetic import make_synthetic_qa

    say = (lambda *a: None) if quiet or console is None else console.print
    t0 = time.perf_counter()
    wd = Path(workdir)
    methods = DEMO_METHODS[:3] if quick else DEMO_METHODS
    say(f"[bold]1/5[/] synthetic video-QA and a tiny LLaVA-OV (random weights) in {wd}")
    model = wd / "models" / "tiny-llava-ov"
    if not (model / "config.json").exists():
        build_tiny_llava_ov(model, text=LEARNABLE)
    paths = make_synthetic_qa(wd / "synthetic", n_train=64, n_test=16 if quick else 32)

    say("[bold]2/5[/] vtc extract --frames 8 (the tiny model's tower)")
    s = extract(
        [str(paths["videos"])], wd / "feats.zarr", model=str(model), frames=8, quiet=quiet, console=console
    )
    if s.failed:
        raise RuntimeError(f"demo extract failed: {s.failed}")

    say(
        "[bold]3/5[/] vtc train --adapter projector,full --method pool --set stride=3,6,9 (one drawn per batch)"
    )
    run = wd / "run"
    train(
        TrainOptions(
            data=str(paths["train"]),
            model=str(model),
            adapters="projector,full",
            out=str(run),
            features=str(wd / "feats.zarr"),
            method="pool",
            params={"stride": ["3", "6", "9"]},
            **TRAIN,
        ),  # fmt: skip
        quiet=quiet,
        console=console,
    )
    results = []
    test = paths["test"].parent
    if untrained:
        say("[bold]4/5[/] vtc eval mcq on stock tokens, without the adapter (the untrained reference)")
        r = evaluate("mcq", wd / "feats.zarr", str(model), data=test, out=wd / "eval-untrained", quiet=True)
        results.append(r)
    for method, params in methods:
        label = method + "".join(f"-{v}" for v in params.values())
        say(f"[bold]5/5[/] vtc compress --method {method} {' '.join(f'--set {k}={v}' for k, v in params.items())}"
            " → vtc eval mcq --adapter")  # fmt: skip
        c = compress(wd / "feats.zarr", method, params, out=wd / f"tokens-{label}.zarr", quiet=True)
        results.append(
            evaluate("mcq", c.out, str(model), data=test, out=wd / f"eval-{label}", adapter=run, quiet=True)
        )
    say(f"demo finished in {time.perf_counter() - t0:.1f} s; artifacts in {wd}")
    return results
