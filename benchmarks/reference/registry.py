"""Loop references the reducer benchmark times and checks against the vectorised reducers.

Each entry: method -> (run(x, grid, reducer, **aux) -> reference output, diff(reduction, output) -> int),
diff = how many base tokens are placed differently (0 = identical decisions), or for adaptive k-means,
whose warm-started sweep legitimately lands on other partitions than 22 cold fits, the two Ks chosen.
The loops see the same base features as the reducer (LLaVA-OV-pooled when the reducer's grid is
"pooled"), so equal outputs mean equal decisions, not just equal counts.
"""

from __future__ import annotations

from reference import dyntok_loop, framefusion_loop, pool_loop, prune_loop, vidtome_loop, visionzip_loop
from reference.dycoke_loop import dycoke_ttm_loop
from reference.kmeans_loop import elbow_loop
from reference.tome_loop import tome_loop
from vtc.reducers import llava_pool
from vtc.reducers.base import groups_diff
from vtc.reducers.tome import frame_budgets


def _base(x, grid, reducer):
    return llava_pool(x, grid)[0] if getattr(reducer, "grid", "native") == "pooled" else x.float()


def _tome(x, grid, r):
    base = _base(x, grid, r)
    T, N, _ = base.shape
    return tome_loop(base, frame_budgets(T, N, r.budget, r.ratio, "tome").tolist())


def _dycoke(x, grid, r):
    return dycoke_ttm_loop(_base(x, grid, r), k=r.k, window=r.window)


def _dycoke_diff(red, kept) -> int:
    # the loop emits the official order (topk inside a frame); the reducer emits raster order
    _, hb, wb = red.base_grid
    return len({t * hb * wb + n for t, n in kept} ^ {s for g in red.visual_groups() for s in g})


def _elbow(x, grid, r):
    base = _base(x, grid, r)
    return elbow_loop(base.reshape(-1, base.shape[-1]).numpy(), k_min=r.k_min, k_max=r.k_max, seed=r.seed)


def _k_chosen(red, ref) -> str:
    return f"K {red.n_visual()}/{ref[0]}"


REFERENCES = {
    "tome": (_tome, groups_diff),
    "dycoke": (_dycoke, _dycoke_diff),
    "vqtoken": (_elbow, _k_chosen),
    "tokendynamics": (_elbow, _k_chosen),
    "dyntok": (dyntok_loop.run, dyntok_loop.diff),
    "framefusion": (framefusion_loop.run, framefusion_loop.diff),
    "visionzip": (visionzip_loop.run, visionzip_loop.diff),
    "vidtome": (vidtome_loop.run, vidtome_loop.diff),
    # these loops build only the plan (which sources, which weights): their time is not like for like
    "none": (pool_loop.run_none, pool_loop.diff_none),
    "pool": (pool_loop.run_pool, pool_loop.diff_pool),
    "uniform": (prune_loop.run_uniform, prune_loop.diff_kept),
    "random": (prune_loop.run_random, prune_loop.diff_kept),
}
