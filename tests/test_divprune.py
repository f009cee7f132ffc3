"""`divprune` (DivPrune, arXiv 2503.02175): the greedy max-min diversity subset, on hand-checkable points,
against a plain loop of the official algorithm, and its default retained share (9.8%)."""

from __future__ import annotations

import math

import torch

from vtc.reducers import get_reducer
from vtc.reducers.base import KIND_VISUAL
from vtc.reducers.divprune import max_min_subset


def plain_max_min(x: torch.Tensor, m: int) -> list[int]:
    """The official algorithm spelled out: d = 1 - cos; first the column whose second-smallest entry is
    largest, then the column whose smallest entry over the chosen rows is largest (first index on ties)."""
    n = x.shape[0]
    unit = x / x.norm(dim=1, keepdim=True)
    d = (1.0 - unit @ unit.T).tolist()
    first_scores = [sorted(d[i][j] for i in range(n))[1] for j in range(n)]
    chosen = [max(range(n), key=lambda j: (first_scores[j], -j))]
    while len(chosen) < m:
        scores = [min(d[i][j] for i in chosen) for j in range(n)]
        chosen.append(max(range(n), key=lambda j: (scores[j], -j)))
    return sorted(chosen)


def test_hand_checked_points():
    # three tokens close together around +e0, one at +e1, one at -e0. First: -e0, whose nearest other
    # token (+e1, d = 1) is the farthest of anyone's nearest (+e1's is the cluster at d = 0.95). Then the
    # token farthest from -e0: +e0 itself (d = 2, the cluster's others 1.9988). Then +e1 (d = 1 from
    # both), and only then the rest of the cluster (d = 0.00125 from +e0).
    x = torch.tensor([[1.0, 0.0], [1.0, 0.05], [1.0, -0.05], [0.0, 1.0], [-1.0, 0.0]])
    assert max_min_subset(x, 1).tolist() == [4]
    assert max_min_subset(x, 2).tolist() == [0, 4]
    assert max_min_subset(x, 3).tolist() == [0, 3, 4]
    assert max_min_subset(x, 5).tolist() == [0, 1, 2, 3, 4]


def test_equals_the_plain_loop():
    g = torch.Generator().manual_seed(0)
    for n, m in ((12, 3), (40, 9), (64, 64)):
        x = torch.randn(n, 5, generator=g)
        assert max_min_subset(x, m).tolist() == plain_max_min(x, m), (n, m)


def test_default_keeps_9_8_percent_of_32_frames():
    x = torch.randn(32, 729, 16, generator=torch.Generator().manual_seed(1))
    r = get_reducer("divprune")(x, (27, 27))
    assert r.base_grid == (32, 14, 14)
    assert r.n_visual() == math.floor(0.098 * 32 * 196 + 0.5) == 615  # the official SUBSET_RATIO
    vis = r.kind == KIND_VISUAL
    assert torch.equal(r.weight, torch.ones_like(r.weight))  # pruning: kept tokens unchanged
    assert int(vis.sum()) == 615 and r.n_llm_tokens == 616  # + the newline
    b = get_reducer("divprune", budget="100")(x, (27, 27))
    assert b.n_visual() == 100
