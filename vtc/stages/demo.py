"""`vtc demo`: the whole pipeline offline, on synthetic videos and a tiny model that vtc trains.

synthetic video-QA (vtc.video.synthetic: colour; frequency, order, count and direction need several
frames) → extract → compress with several methods → train the tiny LLaVA-OV's projector and LLM on
cached stock tokens, and on vqtoken's codebook the same with VQ-Attention → eval the held-out questions
on each reduction, with the trained adapters.
The accuracies are a real model's on a real (if small) task: what each reduction costs, per question type.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

# (method, its --set values, the trained run its evaluation loads); --quick keeps none, pool and uniform.
# The learnable tiny model sees 4x4 pooled tokens per frame (8x8 native): pool stride 4 keeps 2x2.
DEMO_METHODS = [
    ("none", {}, "run"),
    ("pool", {"stride": "4"}, "run"),
    ("vqtoken", {"k": "32"}, "run-vq"),
    ("vqtoken", {"k": "32"}, "run"),
    ("dyntok", {}, "run"),
    ("dycoke", {}, "run"),
    ("uniform", {"ratio": "0.25"}, "run"),
]
# the projector and LLM on stock tokens (trained once, every reduction applied at inference: what a
# reduction costs a model that was not trained for it); and, on vqtoken's codebook, the projector, the
# LLM and VQ-Attention (Eq. 6-7) together
TRAIN = {"batch_size": 8, "lr": 3e-3, "warmup": 0.05}
STEPS = {"run": 1000, "run-vq": 300}
QUICK = {"n_train": 64, "n_test": 32, "steps": {"run": 200}, "methods": (0, 1, 6)}
EVAL = {"batch_size": 16}  # questions per batched generation


def synth_video(
    path: Path, n_frames: int, seed: int, size: tuple[int, int] = (160, 120), fps: int = 8
) -> Path:
    """A deterministic clip: coloured squares moving over a textured background (MPEG-4)."""
    from vtc.video.synthetic import write_video

    rng = np.random.default_rng(seed)
    w, h = size
    background = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    colours = rng.integers(64, 256, size=(2, 3), dtype=np.uint8)
    frames = np.repeat(background[None], n_frames, axis=0)
    for k in range(n_frames):
        for j, c in enumerate(colours[: 1 + seed % 2]):
            x = (10 + 4 * k + 40 * j) % (w - 24)
            y = (20 + 30 * j + (k * seed) % 20) % (h - 24)
            frames[k, y : y + 24, x : x + 24] = c
    return write_video(path, frames, fps, qscale=None)


def demo(
    workdir: str | Path = "vtc-demo",
    quick: bool = False,
    untrained: bool = True,
    quiet: bool = False,
    console=None,
) -> list[dict]:
    """Run the demo; returns one results dict per evaluated method (``"adapter"`` None for the untrained
    reference row). Re-running reuses what is there (videos, features, the trained run, answers)."""
    from vtc.encoders.tiny import build_learnable_llava_ov
    from vtc.stages.compress import compress
    from vtc.stages.evaluate import evaluate
    from vtc.stages.extract import extract
    from vtc.stages.train import TrainOptions, train
    from vtc.video.synthetic import make_synthetic_qa

    say = (lambda *a: None) if quiet or console is None else console.print
    t0 = time.perf_counter()
    wd = Path(workdir)
    methods = [DEMO_METHODS[i] for i in QUICK["methods"]] if quick else DEMO_METHODS
    steps = QUICK["steps"] if quick else STEPS
    say(f"[bold]1/5[/] synthetic video-QA and a tiny LLaVA-OV (random weights) in {wd}")
    model = wd / "models" / "tiny-llava-ov"
    if not (model / "config.json").exists():
        build_learnable_llava_ov(model)
    sizes = (
        {"n_train": QUICK["n_train"], "n_test": QUICK["n_test"]} if quick else {"n_train": 192, "n_test": 64}
    )
    paths = make_synthetic_qa(wd / "synthetic", **sizes)

    say("[bold]2/5[/] vtc extract --frames 8 (the tiny model's tower): a training and a held-out store")
    feats = {}
    for split in ("train", "test"):
        videos = [str(v) for v in sorted(paths["videos"].glob(f"syn_{split}_*.mp4"))]
        feats[split] = wd / f"feats-{split}.zarr"
        s = extract(videos, feats[split], model=str(model), frames=8, quiet=quiet, console=console)
        if s.failed:
            raise RuntimeError(f"demo extract failed: {s.failed}")

    # the held-out videos are compressed with every method; the training ones only where a run needs them
    labels = [method + "".join(f"-{v}" for v in params.values()) for method, params, _ in methods]
    stores = {}
    for label, (method, params, _) in zip(labels, methods, strict=True):
        if method == "none":  # stock tokens: the feature store itself
            stores[label] = feats["test"]
        elif label not in stores:
            stores[label] = compress(
                feats["test"], method, params, out=wd / f"tokens-{label}.zarr", quiet=True
            ).out
    say("[bold]3/5[/] vtc train --adapter projector,full --tokens feats-train.zarr (stock tokens)")
    runs = {"run": wd / f"run-{steps['run']}"}
    train(
        TrainOptions(data=str(paths["train"]), model=str(model), adapters="projector,full", out=str(runs["run"]),
                     tokens=str(feats["train"]), steps=steps["run"],
                     **TRAIN),
        quiet=quiet, console=console,
    )  # fmt: skip
    if any(r == "run-vq" for *_, r in methods):
        say("[bold]3/5[/] vtc train --adapter projector,full,vq-attn --tokens train-vqtoken-32.zarr")
        runs["run-vq"] = wd / f"run-vq-{steps['run-vq']}"
        vq_train = compress(
            feats["train"], "vqtoken", {"k": "32"}, out=wd / "train-vqtoken-32.zarr", quiet=True
        ).out
        train(
            TrainOptions(data=str(paths["train"]), model=str(model), adapters="projector,full,vq-attn",
                         out=str(runs["run-vq"]), tokens=str(vq_train), steps=steps["run-vq"], **TRAIN),
            quiet=quiet, console=console,
        )  # fmt: skip
    results = []
    test = paths["test"].parent
    if untrained:
        say("[bold]4/5[/] vtc eval mcq on stock tokens, without the adapter (the untrained reference)")
        results.append(
            evaluate(
                "mcq", feats["test"], str(model), data=test, out=wd / "eval-untrained", quiet=True, **EVAL
            )
        )
    for label, (_, _, run) in zip(labels, methods, strict=True):
        say(f"[bold]5/5[/] vtc eval mcq --tokens {Path(stores[label]).name} --adapter {runs[run].name}")
        results.append(
            evaluate("mcq", stores[label], str(model), data=test, out=wd / f"eval-{label}-{runs[run].name}",
                     adapter=runs[run], quiet=True, **EVAL)
        )  # fmt: skip
    say(f"demo finished in {time.perf_counter() - t0:.1f} s; artifacts in {wd}")
    return results
