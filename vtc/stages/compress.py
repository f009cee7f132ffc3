"""Stage 2: apply a reducer to every video of a feature store and write a token store.

The token store holds, per video, the reduction's plan (which base-grid tokens make each output
token and with which weights), the reduced features, each token's kind and (t, h, w) position, and
the exact number of tokens that will reach the LLM. Its provenance names the parent store and the
full method config, so evaluation can re-apply the plan to projected features exactly.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vtc.cache import Store, non_finite
from vtc.errors import VtcError
from vtc.stages.progress import progress_bar
from vtc.versions import stable_hash


@dataclass
class CompressSummary:
    store: str
    out: str
    method: dict
    done: int = 0
    skipped: int = 0
    parent_failed: int = 0
    tokens_in: int = 0
    llm_tokens: int = 0
    stock_tokens: int = 0  # what the stock model sends (LLaVA-OV: frames x pooled grid + 1 newline per video)
    seconds: float = 0.0
    failed: list[dict] = field(default_factory=list)

    @property
    def retained(self) -> float:
        return self.llm_tokens / self.tokens_in if self.tokens_in else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "retained": round(self.retained, 6), "vs_stock": round(self.vs_stock, 6)}

    @property
    def vs_stock(self) -> float:
        return self.llm_tokens / self.stock_tokens if self.stock_tokens else 0.0


def run_reducer(reducer, x, grid, aux: dict, device: str = "cpu"):
    """Run a reducer on ``device``: inputs moved there, and tensors it creates land there too (torch's
    device context), so reducers need no device plumbing; the Reduction comes back on the CPU. Seeded
    draws stay on the CPU generator, so kept tokens do not depend on the device. On CUDA, float sums
    (index_add_) may differ in the last bits from the CPU."""
    return run_reducer_batch(reducer, [x], grid, [aux], device)[0]


def run_reducer_batch(reducer, xs: list, grid, auxs: list[dict], device: str = "cpu", seeds=None) -> list:
    """`reduce_batch` on ``device``: each video moved there (the batch is stacked there by the reducer),
    every Reduction brought back to the CPU. ``seeds[v]`` seeds torch's global RNG before video v where
    the reducer runs per video (`reduce_batch`'s loop fallback)."""
    import dataclasses

    import torch

    from vtc.reducers.batch import reduce_batch

    if device == "cpu":
        return reduce_batch(reducer, xs, grid, auxs, seeds)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VtcError(f"--device {device}: CUDA is not available here")
    with torch.device(device):
        reds = reduce_batch(
            reducer,
            [x.to(device) for x in xs],
            grid,
            [{k: v.to(device) for k, v in aux.items()} for aux in auxs],
            seeds,
        )

    def to_cpu(red):
        moved = {
            f.name: getattr(red, f.name).cpu()
            for f in dataclasses.fields(red)
            if isinstance(getattr(red, f.name), torch.Tensor)
        }
        return dataclasses.replace(red, **moved, extras={k: v.cpu() for k, v in red.extras.items()})

    return [to_cpu(r) for r in reds]


def make_reducer(method: str, params: dict[str, str]):
    from vtc.reducers import get_reducer

    try:
        return get_reducer(method, **params)
    except ValueError as e:
        raise VtcError(str(e)) from None


def default_out(store: str | Path, config: dict) -> Path:
    """Content-named output beside the parent: <parent>.<method>-<hash of config>.zarr."""
    store = Path(store)
    stem = store.name[:-5] if store.name.endswith(".zarr") else store.name
    return store.parent / f"{stem}.{config['method']}-{stable_hash(config, 8)}.zarr"


@dataclass
class CompressOptions:
    """What `compress` is asked to do (the CLI builds it from its options)."""

    store: str | Path
    method: str
    params: dict[str, str] | None = None
    out: str | Path | None = None
    seed: int = 0
    device: str = "cpu"
    batch_size: int | None = None


def compress(opt: CompressOptions, quiet: bool = False, console=None) -> CompressSummary:
    """Reduce every done video of feature store ``store`` with ``method`` into token store ``out``.

    ``batch_size`` consecutive videos are reduced in one `reduce_batch` call (1 = one at a time; None =
    8 on an accelerator, 1 on the CPU, where benchmarks/reducers.py measured batching at 0.5-0.9x the
    one-at-a-time speed on 2 cores: the stacked float32 batch no longer fits in cache); the
    store is the same bit for bit whatever the batch size (each Reduction equals the one-video call,
    and batch_size is not part of the store's identity). Each video is still written and marked done
    on its own, so a run killed mid-batch resumes from the first video not written. A batch takes
    consecutive videos whatever their frame counts (a store's videos share grid and channels); reducers
    that stack videos as [B, T, N, C] group equal T themselves. Index field
    ``reduce_s`` is the batch's reduce time divided equally among its ``reduce_batch`` videos.
    """
    params = opt.params
    out = opt.out
    batch_size = opt.batch_size
    import dataclasses

    import torch

    from vtc.families import store_family
    from vtc.reducers import list_reducers, reducer_config
    from vtc.reducers.flops import module_flops

    if batch_size is None:
        batch_size = 1 if opt.device == "cpu" else 8
    if batch_size < 1:
        raise VtcError(f"--batch-size must be >= 1, got {batch_size}")
    feats = Store.open(opt.store, kind="features")
    family = store_family(feats)  # before the output exists
    # LLaVA-OV stores share one grid; a Qwen2.5-VL video's grid follows its resolution (its attrs say it)
    store_grid = feats.meta["identity"]["encoder"].get("grid")
    params = dict(params or {})
    cls = list_reducers().get(opt.method)
    if cls is not None and "seed" in {f.name for f in dataclasses.fields(cls)} and "seed" not in params:
        params["seed"] = str(opt.seed)  # --seed seeds methods with randomness unless --set seed=… is given
    reducer = family.adapt(make_reducer(opt.method, params), params)
    config = reducer_config(reducer)
    out = Path(out) if out else default_out(opt.store, {**config, "seed": opt.seed})
    parent = Path(opt.store).resolve()
    identity = {
        "parent": {"path": str(parent), "identity_hash": feats.meta["identity_hash"]},
        "method": config,
        "seed": opt.seed,
    }
    needs = reducer.needs
    if needs and feats.done():  # checked before the output exists, so a refusal leaves nothing behind
        _check_needs(feats.read(next(iter(feats.done())))[0], needs, config["method"], opt.store)
    tok = Store.create(
        out, "tokens", identity, provenance={"stage": "compress", "parent_identity": feats.meta["identity"]}
    )
    summary = CompressSummary(store=str(opt.store), out=str(out), method=config)
    summary.parent_failed = len(feats.failed())

    done = tok.done()
    todo = [vid for vid in feats.done() if vid not in done]
    summary.skipped = len(feats.done()) - len(todo)
    t0 = time.perf_counter()
    with (
        tok.discarded_on_error(),
        tok.writing(),
        progress_bar(f"compress {config['method']}", len(todo), "videos", quiet, console) as bar,
    ):

        def load(vid):
            """Features (+ the per-video arrays the method needs) of one video, read from zarr; a damaged
            chunk comes back as the VtcError that says so, and the video is recorded as failed."""
            _check_needs(feats.read(vid)[0], needs, config["method"], opt.store)
            try:
                arrays, attrs = feats.load(vid, ("features", *needs))
            except VtcError as e:
                return e
            grid = tuple(int(v) for v in (attrs.get("grid") or store_grid))
            aux = {n: torch.from_numpy(arrays[n]) for n in needs}
            return torch.from_numpy(arrays["features"]), aux, grid

        def write(vid, x, grid, red, t_red, n_batch):
            flops = module_flops(config["method"], reducer, red, int(x.shape[-1]))
            red = family.for_llm(red)  # the rows the family's LLM reads: the counts are of those
            stock = family.stock_tokens(int(x.shape[0]), grid)
            data = red.to_arrays()
            data["tokens"] = data["tokens"].astype(x.numpy().dtype)
            n_in = int(x.shape[0] * x.shape[1])
            tok.write(
                vid,
                data,
                attrs={
                    "base": red.base,
                    "base_grid": list(red.base_grid),
                    "n_input_tokens": n_in,
                    "n_llm_tokens": int(red.n_llm_tokens),
                    "n_visual": int(red.n_visual()),
                    "n_frames": int(x.shape[0]),
                    "grid": list(grid),
                },
                summary={
                    "reduce_s": round(t_red, 6),  # this video's share of its batch's reduce time
                    "reduce_batch": n_batch,  # videos reduced in the same call
                    "module_flops": flops["total"],
                    "n_input_tokens": n_in,
                    "n_llm_tokens": int(red.n_llm_tokens),
                    "n_visual": int(red.n_visual()),
                    "n_frames": int(x.shape[0]),
                    "n_stock_tokens": stock,
                },
            )

        # Reading a video from zarr costs about as much as reducing it: the thread reads up to one
        # batch ahead (zarr and torch release the GIL) while the current batch is reduced and written.
        with ThreadPoolExecutor(max_workers=1) as reader:
            pending = deque(reader.submit(load, vid) for vid in todo[:batch_size])
            queued = len(pending)
            for b0 in range(0, len(todo), batch_size):
                vids = todo[b0 : b0 + batch_size]
                loaded = []
                for _ in vids:
                    loaded.append(pending.popleft().result())
                    if queued < len(todo):
                        pending.append(reader.submit(load, todo[queued]))
                        queued += 1
                # A video with damaged chunks or NaN/inf features is recorded as failed: a reducer would
                # turn NaN into NaN tokens and different token counts without a word.
                keep = []
                for vid, got in zip(vids, loaded, strict=True):
                    bad = (
                        str(got) if isinstance(got, VtcError) else non_finite({"features": got[0], **got[1]})
                    )
                    if bad:
                        tok.fail(vid, bad)
                        summary.failed.append({"id": vid, "reason": bad})
                        bar.note(f"[yellow]skipped[/] {vid}: {bad}")
                        bar.advance(1, 1)
                    else:
                        keep.append((vid, *got))
                # a reducer call takes one grid: runs of consecutive videos that share theirs
                for grid, run in itertools.groupby(keep, key=lambda item: item[3]):
                    run = list(run)
                    vids = [v for v, *_ in run]
                    xs, auxs = [x for _, x, _, _ in run], [a for _, _, a, _ in run]
                    # Seeded per video from (seed, id) so the result does not depend on processing order
                    # (reducers that run per video get it right before their video).
                    seeds = [int(stable_hash([opt.seed, vid], 15), 16) for vid in vids]
                    torch.manual_seed(seeds[0])
                    t_red = time.perf_counter()
                    reds = run_reducer_batch(reducer, xs, grid, auxs, opt.device, seeds)
                    t_red = (time.perf_counter() - t_red) / len(vids)
                    for vid, x, red in zip(vids, xs, reds, strict=True):
                        write(vid, x, grid, red, t_red, len(vids))
                        summary.done += 1
                        bar.advance(1, 1)
    summary.seconds = time.perf_counter() - t0
    from vtc.families import stock_tokens_of

    for vid, e in tok.done().items():
        summary.tokens_in += e["n_input_tokens"]
        summary.llm_tokens += e["n_llm_tokens"]
        summary.stock_tokens += stock_tokens_of(tok, vid)
    return summary


def _check_needs(arrays: dict, needs: tuple[str, ...], method: str, store) -> None:
    """Refuse a method whose per-video arrays (e.g. attention) a video of the feature store lacks."""
    missing = [n for n in needs if n not in arrays]
    if missing:
        raise VtcError(
            f"method {method} needs '{missing[0]}' per video, which {store} does not have "
            f"(extract with --save-{missing[0]})"
        )
