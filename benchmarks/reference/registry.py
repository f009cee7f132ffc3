"""Loop references the reducer benchmark times and checks against the vectorised reducers.

Each entry: method -> (run(x, grid, reducer, **aux) -> reference output, diff(reduction, output) -> int),
diff = how many base tokens are placed differently (0 = identical decisions), or for adaptive k-means,
whose warm-started sweep legitimately lands on other partitions than 22 cold fits, the two Ks chosen.
The loops see the same base features as the reducer (LLaVA-OV-pooled when the reducer's grid is
"pooled"), so equal outputs mean equal decisions, not just equal counts.
"""

from __future__ import annotations

from reference.dycoke_loop import dycoke_ttm_loop
from reference.kmeans_loop import elbow_loop
from reference.tome_loop import tome_loop
from vtc.reducers import llava_pool
from vtc.reducers.tome import frame_budgets


def _base(x, grid, reducer):
    return llava_pool(x, grid)[0] if getattr(reducer, "grid", "native") == "pooled" else x.float()


def _groups(red) -> list[list[int]]:
    n = red.n_visual()
    return [red.src[red.indptr[i] : red.indptr[i + 1]].tolist() for i in range(n)]


def _tome(x, grid, r):
    base = _base(x, grid, r)
    T, N, _ = base.shape
    return tome_loop(base, frame_budgets(T, N, r.budget, r.ratio, "tome").tolist())


def _dycoke(x, grid, r):
    return dycoke_ttm_loop(_base(x, grid, r), k=r.k, window=r.window)


def _dycoke_diff(red, kept) -> int:
    # the loop emits the official order (topk inside a frame); the reducer emits raster order
    _, hb, wb = red.base_grid
    return len({t * hb * wb + n for t, n in kept} ^ {s for g in _groups(red) for s in g})


def _groups_diff(red, groups) -> int:
    ours = {tuple(g) for g in _groups(red)}
    theirs = {tuple(g) for g in groups}
    return sum(len(g) for g in ours ^ theirs)


def _elbow(x, grid, r):
    base = _base(x, grid, r)
    return elbow_loop(base.reshape(-1, base.shape[-1]).numpy(), k_min=r.k_min, k_max=r.k_max, seed=r.seed)


def _k_chosen(red, ref) -> str:
    return f"K {red.n_visual()}/{ref[0]}"


REFERENCES = {
    "tome": (_tome, _groups_diff),
    "dycoke": (_dycoke, _dycoke_diff),
    "vqtoken": (_elbow, _k_chosen),
}
