"""DyCoke TTM as the official code writes it: a per-frame Python loop, the oracle for `vtc.reducers.dycoke`.

A re-implementation of `dycole_ttm` (KD-TAO/DyCoke, `llava/model/llava_arch.py`) on index sets instead
of feature slices, so tests can compare which tokens survive; the lead's benchmark times it against the
vectorised reducer. Kept as literal as possible: F.normalize + F.cosine_similarity in pass 1, plain
F.cosine_similarity in pass 2, `topk(largest=False)`, the same loop ranges, the odd-T behaviour (the last
frame never gets emitted). Two changes so it runs everywhere: empty similarity lists are not
`torch.stack`-ed (the official code raises for T <= 4), and features are cast to float32.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def dycoke_ttm_loop(
    x: Tensor, k: float = 0.7, window: int = 4, official_offset: bool = False
) -> list[tuple[int, int]]:
    """x: [T, N, C] -> kept (t, n) in the official emission order (frame by frame, topk order inside).

    official_offset=True indexes pass 1's similarities with `(i - 2) // 2` as the stored official commit
    does; False uses `i // 2` (frame i+1 against frame i), as PAPERS.md describes it.
    """
    T, N, _ = x.shape
    x = x.float()
    ratio = 1 - k
    n_keep = int(ratio * N)

    # pass 1: similarities of pairs (i, i+1), i even
    similarities = []
    for i in range(0, T - 1, 2):
        f1, f2 = F.normalize(x[i], p=2, dim=1), F.normalize(x[i + 1], p=2, dim=1)
        similarities.append(F.cosine_similarity(f1, f2, dim=1))

    frames: list[list[int]] = []  # frames[t]: kept token indices of frame t, in emission order
    for i in range(0, T - 1, 2):
        sim = similarities[(i - 2) // 2] if official_offset else similarities[i // 2]
        keep = sim.topk(n_keep, largest=False).indices
        frames.append(list(range(N)))
        frames.append([int(n) for n in keep])

    # pass 2: frame i+2, i+4, .. of every window but the last, re-pruned against frame i
    for i in range(0, T - window, window):
        for j in range(2, window, 2):
            sim = F.cosine_similarity(x[i], x[i + j], dim=1)
            keep = sim.topk(n_keep, largest=False).indices
            frames[i] = list(range(N))
            frames[i + j] = [int(n) for n in keep]

    if T == 1:
        frames = [list(range(N))]  # the official code raises here; the reducer keeps a lone frame
    kept = []
    for t, ns in enumerate(frames):
        for n in ns:
            kept.append((t, n))
    return kept
