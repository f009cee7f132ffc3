"""Reducer speed: median time per video for every registered method, on this machine, side by side.

    .venv/bin/python benchmarks/reducers.py                  # all methods, both shapes
    .venv/bin/python benchmarks/reducers.py --methods dycoke tome --repeats 7

Inputs: one video of 32 frames × 196 tokens (14×14) and one of 32 × 729 (27×27), 1152-d, float16, and
(`qwen16x720`) Qwen2.5-VL-7B's 16 steps × 720 merged cells (20×36), 3584-d,
(methods with a `grid` parameter run with grid=native on the 196 video: it already is LLaVA-OV's
pooled grid, so pooling it again to 7×7 would measure nothing real),
random but smooth across frames (so merging methods have something to merge). For each method: the
tokens it sends the LLM at its defaults and their share of the input tokens (on 32x196, a method without
a grid parameter pools the 14x14 input again: none and pool keep 25%), its median wall time of `repeats` calls, its ratio to reading the input once from memory (a float32
sum over every element: the floor for an O(n) method), and — where benchmarks/reference/ has a
straightforward loop re-implementation — the loop's time on the same input, the speed-up, and
how many base tokens the two place differently (0 = identical; a few at most come from float near-ties
at a top-k boundary, where the loop's cosine and the batched one differ in the last bit).

Batched (`--batch B`, default 8; 0 skips): per-video median time of reducing B different 32x196 videos
in one `reduce_batch` call against calling the reducer on each in turn, side by side with the ratio
(methods marked "loop" are not natively batched: `reduce_batch` loops, the ratio should be ~1).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/reference as a package

SHAPES = {"32x196": (32, (14, 14)), "32x729": (32, (27, 27)), "qwen16x720": (16, (20, 36))}
# Qwen2.5-VL-7B's merger tokens of 32 frames of a 1280x720 video (resized to 1008x560): 16 steps of 20x36,
# 3,584-d; methods run as on a Qwen store (`grid=pooled` is the stored grid) and count no separator row.
DIMS = {"qwen16x720": 3584}


def video(T: int, grid: tuple[int, int], C: int = 1152, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, grid[0] * grid[1], C, generator=g)
    drift = 0.3 * torch.randn(T, grid[0] * grid[1], C, generator=g)
    return (base + drift.cumsum(0) / T**0.5).half()


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def aux_for(reducer, x: torch.Tensor) -> dict:
    if "attention" in reducer.needs:
        g = torch.Generator().manual_seed(1)
        return {"attention": torch.rand(x.shape[0], x.shape[1], generator=g).softmax(dim=1)}
    return {}


def references() -> dict:
    """method -> (loop function taking (x, grid, reducer), compare(reduction, loop_output) -> bool)."""
    refs = {}
    try:
        from reference import registry as ref_registry

        refs.update(ref_registry.REFERENCES)
    except ImportError:
        pass
    return refs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="*", help="default: every registered method")
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--no-loop", action="store_true", help="skip the loop references (vqtoken's takes minutes)"
    )
    ap.add_argument("--batch", type=int, default=8, help="videos per batched call (0: skip that table)")
    args = ap.parse_args()

    from vtc.reducers import get_reducer, list_reducers

    torch.set_num_threads(torch.get_num_threads())
    names = args.methods or list(list_reducers())
    refs = {} if args.no_loop else references()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} runs; float16 input"
    )
    header = f"{'method':<15}{'shape':<11}{'LLM tok':>8}{'% in':>8}{'median ms':>11}{'x read':>8}{'loop ms':>11}{'speed-up':>10}{'vs loop':>9}"
    print(header)
    print("-" * len(header))
    from vtc.families import QWEN2_5_VL

    for shape in args.shapes:
        T, grid = SHAPES[shape]
        x = video(T, grid, C=DIMS.get(shape, 1152))
        read = median_time(lambda x=x: x.sum(dtype=torch.float32), args.repeats)
        print(f"{'(read input)':<15}{shape:<11}{'':>8}{'':>8}{1000 * read:>11.2f}{1.0:>8.2f}")
        for name in names:
            fields = {f.name for f in dataclasses.fields(list_reducers()[name])}
            r = get_reducer(name, **({"grid": "native"} if shape == "32x196" and "grid" in fields else {}))
            qwen = shape.startswith("qwen")
            r = QWEN2_5_VL.adapt(r) if qwen else r
            aux = aux_for(r, x)
            out = r(x, grid, **aux)
            out = QWEN2_5_VL.for_llm(out) if qwen else out
            t = median_time(lambda r=r, x=x, g=grid, aux=aux: r(x, g, **aux), args.repeats)
            pct = 100 * out.n_llm_tokens / out.n_input_tokens
            row = f"{name:<15}{shape:<11}{out.n_llm_tokens:>8}{pct:>8.1f}{1000 * t:>11.2f}{t / read:>8.1f}"
            if name in refs:
                loop, diff = refs[name]
                t0 = time.perf_counter()
                ref_out = loop(x, grid, r, **aux)
                lt = time.perf_counter() - t0
                d = diff(out, ref_out)
                shown = d if isinstance(d, str) else ("same" if d == 0 else f"{d} diff")
                row += f"{1000 * lt:>11.1f}{lt / t:>9.1f}x{shown:>9}"
            print(row, flush=True)
    if args.batch:
        batched_table(names, args.batch, args.repeats)


def batched_table(names: list[str], B: int, repeats: int) -> None:
    """Per-video medians: B videos of 32x196 in one reduce_batch call vs one call per video."""
    from vtc.reducers import get_reducer, list_reducers
    from vtc.reducers.batch import natively_batched, reduce_batch

    T, grid = SHAPES["32x196"]
    xs = [video(T, grid, seed=s) for s in range(B)]
    print(f"\nbatched: {B} videos of 32x196 per call, per-video median ms")
    header = f"{'method':<15}{'alone':>9}{'batched':>9}{'ratio':>8}  note"
    print(header)
    print("-" * len(header))
    for name in names:
        fields = {f.name for f in dataclasses.fields(list_reducers()[name])}
        r = get_reducer(name, **({"grid": "native"} if "grid" in fields else {}))
        auxs = [aux_for(r, x) for x in xs]
        alone = median_time(
            lambda r=r, a=auxs: [r(x, grid, **aux) for x, aux in zip(xs, a, strict=True)], repeats
        )
        together = median_time(lambda r=r, a=auxs: reduce_batch(r, xs, grid, a), repeats)
        note = "" if natively_batched(r) else "loop"
        print(
            f"{name:<15}{1000 * alone / B:>9.2f}{1000 * together / B:>9.2f}{alone / together:>7.2f}x  {note}",
            flush=True,
        )


if __name__ == "__main__":
    main()
