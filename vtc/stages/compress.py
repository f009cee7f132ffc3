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


@dataclass
class Setup:
    """The reducer of a compress run and the feature store it reads, as every engine builds it (the Ray
    engine again in each task)."""

    feats: Store
    family: object
    reducer: object
    config: dict
    needs: tuple
    store_grid: object
    batch_size: int


def setup(opt: CompressOptions) -> Setup:
    import dataclasses

    from vtc.families import store_family
    from vtc.reducers import list_reducers, reducer_config

    batch_size = opt.batch_size if opt.batch_size is not None else (1 if opt.device == "cpu" else 8)
    if batch_size < 1:
        raise VtcError(f"--batch-size must be >= 1, got {batch_size}")
    feats = Store.open(opt.store, kind="features")
    family = store_family(feats)  # before the output exists
    # LLaVA-OV stores share one grid; a Qwen2.5-VL video's grid follows its resolution (its attrs say it)
    store_grid = feats.meta["identity"]["encoder"].get("grid")
    params = dict(opt.params or {})
    cls = list_reducers().get(opt.method)
    if cls is not None and "seed" in {f.name for f in dataclasses.fields(cls)} and "seed" not in params:
        params["seed"] = str(opt.seed)  # --seed seeds methods with randomness unless --set seed=… is given
    reducer = family.adapt(make_reducer(opt.method, params), params)
    return Setup(feats, family, reducer, reducer_config(reducer), reducer.needs, store_grid, batch_size)


def open_output(opt: CompressOptions, s: Setup) -> tuple[Store, CompressSummary, list[str]]:
    """The token store (created, or opened to resume), the run's summary so far, and the videos to do."""
    feats, config = s.feats, s.config
    out = Path(opt.out) if opt.out else default_out(opt.store, {**config, "seed": opt.seed})
    identity = {
        "parent": {"path": str(Path(opt.store).resolve()), "identity_hash": feats.meta["identity_hash"]},
        "method": config,
        "seed": opt.seed,
    }
    if s.needs and feats.done():  # checked before the output exists, so a refusal leaves nothing behind
        _check_needs(feats.read(next(iter(feats.done())))[0], s.needs, config["method"], opt.store)
    tok = Store.create(
        out, "tokens", identity, provenance={"stage": "compress", "parent_identity": feats.meta["identity"]}
    )
    summary = CompressSummary(store=str(opt.store), out=str(out), method=config)
    summary.parent_failed = len(feats.failed())
    done = tok.done()
    todo = [vid for vid in feats.done() if vid not in done]
    summary.skipped = len(feats.done()) - len(todo)
    return tok, summary, todo


def load_video(s: Setup, vid: str, store_name) -> tuple | VtcError:
    """Features (+ the per-video arrays the method needs) and grid of one video, read from zarr; a damaged
    chunk comes back as the VtcError that says so, and the video is recorded as failed."""
    import torch

    _check_needs(s.feats.read(vid)[0], s.needs, s.config["method"], store_name)
    try:
        arrays, attrs = s.feats.load(vid, ("features", *s.needs))
    except VtcError as e:
        return e
    grid = tuple(int(v) for v in (attrs.get("grid") or s.store_grid))
    aux = {n: torch.from_numpy(arrays[n]) for n in s.needs}
    return torch.from_numpy(arrays["features"]), aux, grid


def reduce_videos(
    s: Setup, vids: list[str], loaded: list, opt: CompressOptions
) -> list[tuple[str, dict | str]]:
    """One batch: ``(id, record)`` per reduced video (what it stores: ``data``, ``attrs``, ``summary``) or
    ``(id, reason)`` per failure, failures first, each group in input order: the order the index gets."""
    import torch

    failed, keep = [], []
    # A video with damaged chunks or NaN/inf features is recorded as failed: a reducer would turn NaN into
    # NaN tokens and different token counts without a word.
    for vid, got in zip(vids, loaded, strict=True):
        bad = str(got) if isinstance(got, VtcError) else non_finite({"features": got[0], **got[1]})
        if bad:
            failed.append((vid, bad))
        else:
            keep.append((vid, *got))
    done = []
    # a reducer call takes one grid: runs of consecutive videos that share theirs
    for grid, run in itertools.groupby(keep, key=lambda item: item[3]):
        run = list(run)
        rvids = [v for v, *_ in run]
        xs, auxs = [x for _, x, _, _ in run], [a for _, _, a, _ in run]
        # Seeded per video from (seed, id) so the result does not depend on processing order (reducers
        # that run per video get it right before their video).
        seeds = [int(stable_hash([opt.seed, vid], 15), 16) for vid in rvids]
        torch.manual_seed(seeds[0])
        t_red = time.perf_counter()
        reds = run_reducer_batch(s.reducer, xs, grid, auxs, opt.device, seeds)
        t_red = (time.perf_counter() - t_red) / len(rvids)
        done += [
            (vid, _record(s, x, grid, red, t_red, len(rvids)))
            for vid, x, red in zip(rvids, xs, reds, strict=True)
        ]
    return failed + done


def _record(s: Setup, x, grid, red, t_red: float, n_batch: int) -> dict:
    from vtc.reducers.flops import module_flops

    flops = module_flops(s.config["method"], s.reducer, red, int(x.shape[-1]))
    red = s.family.for_llm(red)  # the rows the family's LLM reads: the counts are of those
    data = red.to_arrays()
    data["tokens"] = data["tokens"].astype(x.numpy().dtype)
    n_in = int(x.shape[0] * x.shape[1])
    counts = {"n_input_tokens": n_in, "n_llm_tokens": int(red.n_llm_tokens), "n_visual": int(red.n_visual())}
    counts["n_frames"] = int(x.shape[0])
    attrs = {"base": red.base, "base_grid": list(red.base_grid), **counts, "grid": list(grid)}
    summary = {
        "reduce_s": round(t_red, 6),  # this video's share of its batch's reduce time
        "reduce_batch": n_batch,  # videos reduced in the same call
        "module_flops": flops["total"],
        **counts,
        "n_stock_tokens": s.family.stock_tokens(int(x.shape[0]), grid),
    }
    return {"data": data, "attrs": attrs, "summary": summary}


def totals(tok: Store, summary: CompressSummary) -> CompressSummary:
    """The summary's token totals, over every video of the token store (this run's and earlier ones')."""
    from vtc.families import stock_tokens_of

    for vid, e in tok.done().items():
        summary.tokens_in += e["n_input_tokens"]
        summary.llm_tokens += e["n_llm_tokens"]
        summary.stock_tokens += stock_tokens_of(tok, vid)
    return summary


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
    s = setup(opt)
    tok, summary, todo = open_output(opt, s)
    batch_size = s.batch_size
    t0 = time.perf_counter()
    with (
        tok.discarded_on_error(),
        tok.writing(),
        progress_bar(f"compress {s.config['method']}", len(todo), "videos", quiet, console) as bar,
        # Reading a video from zarr costs about as much as reducing it: the thread reads up to one batch
        # ahead (zarr and torch release the GIL) while the current batch is reduced and written.
        ThreadPoolExecutor(max_workers=1) as reader,
    ):
        pending = deque(reader.submit(load_video, s, vid, opt.store) for vid in todo[:batch_size])
        queued = len(pending)
        for b0 in range(0, len(todo), batch_size):
            vids = todo[b0 : b0 + batch_size]
            loaded = []
            for _ in vids:
                loaded.append(pending.popleft().result())
                if queued < len(todo):
                    pending.append(reader.submit(load_video, s, todo[queued], opt.store))
                    queued += 1
            for vid, rec in reduce_videos(s, vids, loaded, opt):
                if isinstance(rec, str):
                    tok.fail(vid, rec)
                    summary.failed.append({"id": vid, "reason": rec})
                    bar.note(f"[yellow]skipped[/] {vid}: {rec}")
                else:
                    tok.write(vid, rec["data"], rec["attrs"], summary=rec["summary"])
                    summary.done += 1
                bar.advance(1, 1)
    summary.seconds = time.perf_counter() - t0
    return totals(tok, summary)


def _check_needs(arrays: dict, needs: tuple[str, ...], method: str, store) -> None:
    """Refuse a method whose per-video arrays (e.g. attention) a video of the feature store lacks."""
    missing = [n for n in needs if n not in arrays]
    if missing:
        raise VtcError(
            f"method {method} needs '{missing[0]}' per video, which {store} does not have "
            f"(extract with --save-{missing[0]})"
        )
