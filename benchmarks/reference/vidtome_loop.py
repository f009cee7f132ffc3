"""A plain loop version of `vtc.reducers.vidtome` (VidToMe: ToMe across the frames of a window).

Written from the reducer's docstring. Per window of `window` consecutive frames (the last may be shorter):
stage 1 — B = the key (first) frame's tokens, A = every token of the other frames; each A token's edge goes
to its most similar key-frame token (cosine; ties -> first), the r = min(n - k, |A|) most similar edges
(stable: ties -> first A in frame-major order) merge into their key token, size-weighted. Stage 2 — while
the window still holds more than k tokens: ToMe bipartite soft matching rounds (tokens in order of their
smallest member, A = even positions, B = odd, r = min(n - k, |A|)). k = the window's summed per-frame
budgets (`tome`'s rule). Python loops over windows, rounds and tokens; one token's similarities to the
other set are one numpy matrix-vector product in float64.
"""

from __future__ import annotations

import math

import numpy as np

from vtc.reducers.base import groups_diff, llava_pool


def frame_budgets(T: int, N: int, budget: int | None, ratio: float) -> list[int]:
    if budget is None:
        return [min(N, max(1, math.floor(ratio * N + 0.5)))] * T
    if budget >= T * N:
        return [N] * T
    if budget < T:
        raise ValueError(f"budget {budget} < {T} frames")
    q, rem = divmod(budget, T)
    return [q + (1 if t < rem else 0) for t in range(T)]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-8)


def _best(a: np.ndarray, b_units: np.ndarray) -> tuple[float, int]:
    """(similarity, index) of a's most similar row of b_units; ties -> the first."""
    sims = (b_units @ _unit(a)).tolist()
    j = max(range(len(sims)), key=lambda i: (sims[i], -i))
    return sims[j], j


def _merge(tokens: list, into: dict[int, list[int]]) -> list:
    """tokens: [(feature, size, members)]; into: survivor position -> positions merging into it.
    -> survivors with size-weighted means, ordered by smallest member."""
    merged = {i for v in into.values() for i in v}
    new = []
    for j, (f, s, members) in enumerate(tokens):
        if j in merged:
            continue
        f, members = f * s, list(members)
        for i in into.get(j, []):
            fi, si, mi = tokens[i]
            f = f + fi * si
            s = s + si
            members += mi
        new.append((f / s, s, sorted(members)))
    return sorted(new, key=lambda t: t[2][0])


def tome_rounds_loop(tokens: list, k: int) -> list:
    """ToMe rounds on tokens [(feature, size, members)] (ordered by smallest member) until k are left."""
    while len(tokens) > k:
        n = len(tokens)
        a_pos, b_pos = list(range(0, n, 2)), list(range(1, n, 2))
        r = min(n - k, len(a_pos))
        b_units = np.stack([_unit(tokens[j][0]) for j in b_pos])
        edges = []
        for ai, i in enumerate(a_pos):
            sim, bj = _best(tokens[i][0], b_units)
            edges.append((sim, ai, bj))
        edges.sort(key=lambda e: -e[0])  # stable: ties keep A order
        into: dict[int, list[int]] = {}
        for _, ai, bj in edges[:r]:
            into.setdefault(b_pos[bj], []).append(a_pos[ai])
        tokens = _merge(tokens, into)
    return tokens


def run(x, grid, reducer) -> list[list[int]]:
    """x [T, H*W, C] -> groups of flat base indices (ascending), in the reducer's output order."""
    if reducer.grid == "pooled":
        feats, (hb, wb) = llava_pool(x, grid)
    else:
        feats, (hb, wb) = x.float(), (int(grid[0]), int(grid[1]))
    feats = feats.double().numpy()
    T, N = int(feats.shape[0]), hb * wb
    F = min(reducer.window, T)
    kf = frame_budgets(T, N, reducer.budget, reducer.ratio)
    groups = []
    for t0 in range(0, T, F):
        frames = list(range(t0, min(T, t0 + F)))
        k = sum(kf[t] for t in frames)
        key = [(feats[t0, i], 1.0, [t0 * N + i]) for i in range(N)]
        others = [(feats[t, i], 1.0, [t * N + i]) for t in frames[1:] for i in range(N)]
        tokens = key + others
        r = max(0, min(len(tokens) - k, len(others)))
        if r > 0:  # stage 1: A = other frames -> B = key frame
            key_units = np.stack([_unit(f) for f, _, _ in key])
            edges = []
            for ai, (f, _, _) in enumerate(others):
                sim, bj = _best(f, key_units)
                edges.append((sim, ai, bj))
            edges.sort(key=lambda e: -e[0])
            into: dict[int, list[int]] = {}
            for _, ai, bj in edges[:r]:
                into.setdefault(bj, []).append(N + ai)
            tokens = _merge(tokens, into)
        tokens = tome_rounds_loop(tokens, k)  # stage 2: only if stage 1 ran out of A tokens
        groups += [members for _, _, members in tokens]
    return groups


diff = groups_diff  # the shared check: base tokens grouped differently
