"""A plain loop version of `vtc.reducers.tome`'s per-frame bipartite soft matching (ToMe §3.1).

The oracle for tests/test_reducers_tome.py (same merges on random inputs) and the slow side of the
speed benchmark. Python loops over frames, rounds and tokens; one token's similarities to set B are a
single matrix-vector product. Same rules as the batched code: tokens in order of their representative
(smallest member), A = even positions, B = odd; each A token's best B (cosine, ties -> first B); the
r = min(n - k, |A|) most similar edges (stable: ties -> first A) merge, size-weighted.
"""

from __future__ import annotations

import torch


def tome_frame_loop(feats: torch.Tensor, k: int) -> list[list[int]]:
    """feats [N, C] one frame, k tokens to keep -> groups (lists of token indices, ascending), in order
    of their smallest member."""
    feats = feats.float()
    # each token: (feature, size, members); kept in order of the smallest member
    tokens = [(feats[i], 1.0, [i]) for i in range(feats.shape[0])]
    while len(tokens) > k:
        n = len(tokens)
        a_idx, b_idx = list(range(0, n, 2)), list(range(1, n, 2))
        r = min(n - k, len(a_idx))
        b_unit = torch.stack([tokens[j][0] / tokens[j][0].norm().clamp_min(1e-8) for j in b_idx])  # [nb, C]
        best = []  # (similarity, A position, B position) of each A token's edge
        for ai, i in enumerate(a_idx):
            a_unit = tokens[i][0] / tokens[i][0].norm().clamp_min(1e-8)
            sims = (b_unit @ a_unit).tolist()
            bj = max(range(len(sims)), key=lambda j, s=sims: (s[j], -j))  # first maximum
            best.append((sims[bj], ai, bj))
        edges = sorted(best, key=lambda e: -e[0])  # stable: equal similarities keep A order
        into: dict[int, list[int]] = {}  # B token -> the A tokens merging into it
        merged = set()
        for _, ai, bj in edges[:r]:
            into.setdefault(b_idx[bj], []).append(a_idx[ai])
            merged.add(a_idx[ai])
        new = []
        for j, (f, s, members) in enumerate(tokens):
            if j in merged:
                continue
            for i in into.get(j, []):  # size-weighted average, ToMe's "tracking token size"
                fi, si, mi = tokens[i]
                f = (f * s + fi * si) / (s + si)
                s = s + si
                members = members + mi
            new.append((f, s, sorted(members)))
        tokens = sorted(new, key=lambda t: t[2][0])
    return [t[2] for t in tokens]


def tome_loop(feats: torch.Tensor, k: list[int]) -> list[list[int]]:
    """feats [T, N, C], k[t] tokens kept in frame t -> groups of flat indices t*N + i, in raster order
    of their smallest member (the order of `tome`'s visual tokens)."""
    T, N, _ = feats.shape
    return [[t * N + i for i in g] for t in range(T) for g in tome_frame_loop(feats[t], int(k[t]))]
