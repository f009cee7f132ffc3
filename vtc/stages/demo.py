"""`vtc demo`: the whole pipeline offline, on synthetic videos and a tiny model that vtc trains.

synthetic video-QA (vtc.video.synthetic: colour; frequency, order, count and direction need several
frames) → extract → compress with several methods → train the tiny LLaVA-OV's projector and LLM on
cached stock tokens, then VQ-Attention alone on top of that on vqtoken's codebook → eval the held-out
questions on each reduction, with the trained adapters → report (table, Pareto plots, HTML) and one
picture of the reductions' plans. With ``family="qwen2.5-vl"`` the same on a tiny Qwen2.5-VL, whose LLM
alone is trained (its merger's output is what vtc stores).
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
# reduction costs a model that was not trained for it); then VQ-Attention (Eq. 6-7) alone on top of that
# frozen run, on vqtoken's codebook: what the trained module gives back
TRAIN = {"batch_size": 8, "lr": 3e-3, "warmup": 0.05}
STEPS = {"run": 1000, "run-vq": 300}
QUICK = {"n_train": 64, "n_test": 32, "steps": {"run": 200}}
EVAL = {"batch_size": 16}  # questions per batched generation
# The Qwen2.5-VL demo: its tower and merger stay frozen (vtc stores the merger's output), so the LLM alone
# (`full`) learns; 128x96 frames stay 140x84 with min_pixels at 4 cells (3x5 tokens per pair of frames).
QWEN_METHODS = [
    ("none", {}, "run"),
    ("fastvid", {}, "run"),
    ("dycoke", {}, "run"),
    ("vidcom2", {}, "run"),
    ("uniform", {"ratio": "0.25"}, "run"),
]
FAMILIES = {
    "llava-onevision": {"prefix": "", "adapters": "projector,full", "methods": DEMO_METHODS, "quick": (0, 1, 6),
                        "extract": {}, "model": "tiny-llava-ov", "build": "build_learnable_llava_ov"},
    "qwen2.5-vl": {"prefix": "qwen-", "adapters": "full", "methods": QWEN_METHODS, "quick": (0, 1, 4),
                   "extract": {"min_pixels": 4 * 28 * 28}, "model": "tiny-qwen2.5-vl",
                   "build": "build_learnable_qwen2_5_vl"},
}  # fmt: skip


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


def _compress_all(feats: Path, jobs: dict[str, tuple]) -> dict[str, Path]:
    """label -> token store, for jobs label -> (method, params, out): two processes at a time, since a
    store's writes are single-threaded zarr work (measured: about half of a small store's time)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = {lb: pool.submit(_compress_one, feats, *job) for lb, job in jobs.items()}
        return {lb: Path(f.result()) for lb, f in done.items()}


def _compress_one(feats: Path, method: str, params: dict, out: Path) -> str:
    from vtc.stages.compress import CompressOptions, compress

    return str(compress(CompressOptions(feats, method, params, out=out), quiet=True).out)


def demo(
    workdir: str | Path = "vtc-demo",
    quick: bool = False,
    untrained: bool = True,
    quiet: bool = False,
    console=None,
    verbose: bool = False,
    family: str = "llava-onevision",
) -> list[dict]:
    """Run the demo; returns one results dict per evaluated method (``"adapter"`` None for the untrained
    reference row). Re-running reuses what is there (videos, features, the trained run, answers).
    The libraries' own progress bars and log lines are held back unless ``verbose``. ``family``: the
    tiny model's (`vtc.families`); a Qwen2.5-VL demo's artifacts start with ``qwen-``, so both families
    can share a working directory and its report."""
    from vtc.families import get_family
    from vtc.stages.progress import third_party_quiet

    get_family(family)
    with third_party_quiet(verbose, console):
        return _demo(Path(workdir), quick, untrained, quiet, console, family)


def _demo(wd: Path, quick: bool, untrained: bool, quiet: bool, console, family: str) -> list[dict]:
    from vtc.encoders import tiny
    from vtc.families import get_family
    from vtc.stages.evaluate import EvalOptions, evaluate
    from vtc.stages.extract import ExtractOptions, extract
    from vtc.stages.report import report
    from vtc.stages.train import TrainOptions, train
    from vtc.stages.viz import viz
    from vtc.video.synthetic import make_synthetic_qa

    say = (lambda *a: None) if quiet or console is None else console.print
    t0 = time.perf_counter()
    fam, label = FAMILIES[family], get_family(family).label
    pre = fam["prefix"]
    methods = [fam["methods"][i] for i in fam["quick"]] if quick else fam["methods"]
    steps = QUICK["steps"] if quick else STEPS
    say(f"[bold]1/6[/] synthetic video-QA and a tiny {label} (random weights) in {wd}")
    model = wd / "models" / fam["model"]
    if not (model / "config.json").exists():
        getattr(tiny, fam["build"])(model)
    sizes = (
        {"n_train": QUICK["n_train"], "n_test": QUICK["n_test"]} if quick else {"n_train": 192, "n_test": 64}
    )
    paths = make_synthetic_qa(wd / "synthetic", **sizes)

    say("[bold]2/6[/] vtc extract --frames 8 (the tiny model's tower): a training and a held-out store")
    feats = {}
    for split in ("train", "test"):
        videos = [str(v) for v in sorted(paths["videos"].glob(f"syn_{split}_*.mp4"))]
        feats[split] = wd / f"{pre}feats-{split}.zarr"
        s = extract(
            ExtractOptions(videos, feats[split], model=str(model), frames=8, **fam["extract"]),
            quiet=quiet,
            console=console,
        )
        if s.failed:
            raise RuntimeError(f"demo extract failed: {s.failed}")

    # the held-out videos are compressed with every method (stock tokens: the feature store itself)
    labels = [method + "".join(f"-{v}" for v in params.values()) for method, params, _ in methods]
    jobs = {lb: (m, p) for lb, (m, p, _) in zip(labels, methods, strict=True) if m != "none"}
    say(f"[bold]2/6[/] vtc compress {pre}feats-test.zarr --method {','.join(m for m, _ in jobs.values())}")
    stores = {lb: feats["test"] for lb in labels}
    stores.update(
        _compress_all(
            feats["test"], {lb: (m, p, wd / f"{pre}tokens-{lb}.zarr") for lb, (m, p) in jobs.items()}
        )
    )
    say(f"[bold]3/6[/] vtc train --adapter {fam['adapters']} --tokens {pre}feats-train.zarr (stock tokens)")
    runs = {"run": wd / f"{pre}run-{steps['run']}"}
    train(
        TrainOptions(data=str(paths["train"]), model=str(model), adapters=fam["adapters"], out=str(runs["run"]),
                     tokens=str(feats["train"]), steps=steps["run"],
                     **TRAIN),
        quiet=quiet, console=console,
    )  # fmt: skip
    if any(r == "run-vq" for *_, r in methods):
        say("[bold]3/6[/] vtc train --adapter vq-attn --init run --features feats-train.zarr --method vqtoken "
            "--set k=32")  # fmt: skip
        runs["run-vq"] = wd / f"{pre}run-vq-{steps['run-vq']}"
        train(  # VQ-Attention alone on top of the frozen run; vqtoken on the fly (once per video: cached)
            TrainOptions(data=str(paths["train"]), model=str(model), adapters="vq-attn", init=str(runs["run"]),
                         out=str(runs["run-vq"]), features=str(feats["train"]), method="vqtoken",
                         params={"k": ["32"]}, steps=steps["run-vq"], **TRAIN),
            quiet=quiet, console=console,
        )  # fmt: skip
    results = []
    test = paths["test"].parent
    if untrained:
        say("[bold]4/6[/] vtc eval mcq on stock tokens, without the adapter (the untrained reference)")
        results.append(
            evaluate(
                EvalOptions(
                    "mcq", feats["test"], str(model), data=test, out=wd / f"{pre}eval-untrained", **EVAL
                ),
                quiet=quiet,
                console=console,
            )  # fmt: skip
        )
    for label, (_, _, run) in zip(labels, methods, strict=True):
        say(f"[bold]5/6[/] vtc eval mcq --tokens {Path(stores[label]).name} --adapter {runs[run].name}")
        results.append(
            evaluate(EvalOptions("mcq", stores[label], str(model), data=test, out=wd / f"{pre}eval-{label}-{runs[run].name}", adapter=runs[run], **EVAL), quiet=quiet, console=console)
        )  # fmt: skip
    say(
        "[bold]6/6[/] vtc report (table, Pareto plots, HTML) and vtc viz (each reduction's plan on one video)"
    )
    rep = report([wd], wd / "report")
    first = sorted(paths["videos"].glob("syn_test_*.mp4"))[0].stem
    shown = [stores[lb] for lb, (m, _, _) in zip(labels, methods, strict=True) if m != "none"]
    picture = viz(first, list(dict.fromkeys(shown)), wd / f"{pre}viz.png")
    if not picture.source_found:
        say(f"[yellow]warning[/] {first}'s video is gone: the plans are drawn on grey")
    say(f"demo finished in {time.perf_counter() - t0:.1f} s; artifacts in {wd}")
    say(f"report: {wd / 'report' / 'report.html'} ({len(rep.rows)} evaluations)  ·  picture: {picture.out}")
    return results
