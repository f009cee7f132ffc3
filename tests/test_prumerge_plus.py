"""`prumerge+` (PruMerge+, arXiv 2403.15388): the IQR rule and the lattice by hand, the k-NN merge on hand-placed
tokens, the [CLS] stand-ins, the official code's choices and outputs, and the paper's retained share."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vtc.reducers import KIND_VISUAL, get_reducer, llava_pool
from vtc.reducers.prumerge_plus import frame_scores, iqr_outliers, kept_indices

ORACLE = json.loads((Path(__file__).parent / "data" / "prumerge_official.json").read_text())


def rows(red):
    """[(sources, weights)] of the visual tokens, in output order."""
    ip = red.indptr.tolist()
    return [
        (red.src[ip[n] : ip[n + 1]].tolist(), red.weight[ip[n] : ip[n + 1]].tolist())
        for n in range(red.n_llm_tokens)
        if red.kind[n] == KIND_VISUAL
    ]


def kept_of(a: list[float]) -> list[int]:
    t = torch.tensor([a], dtype=torch.float64)
    return kept_indices(t[0], iqr_outliers(t)[0]).tolist()


# --------------------------------------------------------------------------------------------------
# the IQR rule and the lattice, by hand


def test_iqr_rule_and_lattice_by_hand():
    # 12 scores, two far above the rest: Q1 = Q3 = 1, bound 1 -> outliers {5, 9}; n = 2: floor(12/2) = 6,
    # floor(6/3) = 2 -> lattice 0, 2, .., 10 (< N-1 = 11)
    a = [1.0] * 12
    a[5], a[9] = 5.0, 7.0
    assert iqr_outliers(torch.tensor([a])).nonzero()[:, 1].tolist() == [5, 9]
    assert kept_of(a) == [0, 2, 4, 5, 6, 8, 9, 10]
    # quartiles interpolate linearly (numpy.percentile): 1..8 -> Q1 2.75, Q3 6.25, bound 11.5: no outlier,
    # so the top token (7) stands in; floor(8/1) = 8, floor(8/3) = 2 -> lattice 0, 2, 4, 6
    assert not iqr_outliers(torch.arange(1.0, 9.0)[None]).any()
    assert kept_of([float(v) for v in range(1, 9)]) == [0, 2, 4, 6, 7]
    # 11.5 is the bound: 11.5 is not above it, 11.6 is
    assert kept_of([1, 2, 3, 4, 5, 6, 7, 11.5]) == [0, 2, 4, 6, 7]
    assert iqr_outliers(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 11.6]], dtype=torch.float64)).sum() == 1
    # many outliers (N/n < 6): the stride is 1, every token but those past the lattice is kept
    assert kept_of([1.0] * 8 + [9.0] * 2) == list(range(10))


def test_lattice_counts_equal_the_official_floats_at_576():
    """The official code computes topk(int(N * ratio)) and int(1 / ratio) in floats, ratio = n / N; vtc uses
    exact integers. At N = 576 they agree for every outlier count."""
    for n in range(1, 577):
        ratio = n / 576
        assert int(576 * ratio) == n and int(1 / ratio) == 576 // n


# --------------------------------------------------------------------------------------------------
# merging, by hand


def test_merge_on_hand_placed_tokens():
    """Six unit tokens at known angles; attention 0.5 on token 5, 0.1 elsewhere: outlier {5}, lattice
    floor(floor(6/1)/3) = 2 -> {0, 2, 4}; kept {0, 2, 4, 5}, pruned {1, 3}. With k = 1 each kept token takes
    its nearest other token: 0 <- 1 (10 deg), 2 <- 3 (45 deg), 4 <- 5, 5 <- 4."""
    deg = torch.tensor([0.0, 10.0, 40.0, 45.0, 90.0, 100.0]) * math.pi / 180
    x = torch.stack((deg.cos(), deg.sin()), dim=1)[None]  # [1, 6, 2], grid 2x3
    att = torch.tensor([[0.1, 0.1, 0.1, 0.1, 0.1, 0.5]])
    red = get_reducer("prumerge+", score="attention", grid="native", k=1)(x, (2, 3), attention=att)
    got = [(s, [round(v, 6) for v in w]) for s, w in rows(red)]
    assert got == [
        ([0, 1], [round(1 / 1.1, 6), round(0.1 / 1.1, 6)]),  # x0 + 0.1 x1, normalised
        ([1, 3], [0.5, 0.5]),  # the extra token: the pruned 1 and 3, attention-weighted (equal)
        ([2, 3], [round(1 / 1.1, 6), round(0.1 / 1.1, 6)]),
        ([4, 5], [round(1 / 1.5, 6), round(0.5 / 1.5, 6)]),  # 5 is the outlier: its weight is 0.5
        ([4, 5], [round(0.1 / 1.1, 6), round(1 / 1.1, 6)]),  # ...and 5 takes 4 with 0.1
    ]
    assert red.pos[:5, 2].tolist() == [0, 1, 2, 1, 2] and red.pos[:5, 1].tolist() == [0, 0, 0, 1, 1]
    torch.testing.assert_close(red.tokens[0], (x[0, 0] + 0.1 * x[0, 1]) / 1.1)
    torch.testing.assert_close(red.tokens[1], (x[0, 1] + x[0, 3]) / 2)
    # without the extra token: one row less; k = 0: the kept tokens as they are
    assert (
        get_reducer("prumerge+", score="attention", grid="native", k=1, extra=False)(
            x, (2, 3), attention=att
        ).n_visual()
        == 4
    )
    bare = get_reducer("prumerge+", score="attention", grid="native", k=0, extra=False)(
        x, (2, 3), attention=att
    )
    assert rows(bare) == [([0], [1.0]), ([2], [1.0]), ([4], [1.0]), ([5], [1.0])]


def test_neighbours_come_from_kept_and_pruned_tokens_alike():
    """As the paper's Algorithm 1 and the official code: a kept token's k nearest are sought among all other
    tokens, kept ones included (token 5 above merges the kept 4); k larger than N-1 takes them all."""
    x = torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(0))
    att = torch.tensor([[0.1, 0.1, 0.1, 0.1, 0.1, 0.5]])
    red = get_reducer("prumerge+", score="attention", grid="native", k=100, extra=False)(
        x, (2, 3), attention=att
    )
    assert [s for s, _ in rows(red)] == [list(range(6))] * 4
    for (_, w), p in zip(rows(red), [0, 2, 4, 5], strict=True):
        expect = att[0].double().clone()
        expect[p] = 1.0
        torch.testing.assert_close(
            torch.tensor(w, dtype=torch.float64), expect / expect.sum(), atol=1e-6, rtol=0
        )


# --------------------------------------------------------------------------------------------------
# the [CLS] stand-ins


def test_feature_mean_score_is_eq1_with_the_mean_token_as_query():
    """SigLIP has no [CLS]: score=feature-mean is softmax_n(<x_n, mean(x)> / sqrt(C)) per frame (Eq. 1 with the
    frame's mean token as the query and the features as keys)."""
    x = torch.randn(3, 10, 5, generator=torch.Generator().manual_seed(1))
    a = frame_scores(x, "feature-mean", None, (2, 5))
    ref = torch.stack([(x[t] @ x[t].mean(0) / math.sqrt(5)).softmax(0) for t in range(3)]).double()
    torch.testing.assert_close(a, ref, atol=1e-6, rtol=1e-6)
    assert torch.allclose(a.sum(1), torch.ones(3, dtype=torch.float64))


def test_feature_mean_keeps_the_token_most_like_its_frame():
    """One token lies far out along the frame's mean direction: it is the only outlier, kept unmerged-first."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 36, 8, generator=g) * 0.1 + torch.tensor([1.0] + [0.0] * 7)
    x[0, 17] = torch.tensor([6.0] + [0.0] * 7)
    a = frame_scores(x, "feature-mean", None, (6, 6))
    assert iqr_outliers(a)[0].nonzero().squeeze(1).tolist() == [17]
    red = get_reducer("prumerge+", grid="native")(x, (6, 6))
    # n = 1: floor(floor(36/1)/3) = 12 -> lattice 0, 12, 24; kept {0, 12, 17, 24} (each its own row's
    # position) + the extra token
    flat = (red.pos[:-1, 1] * 6 + red.pos[:-1, 2]).tolist()
    assert red.n_visual() == 5 and {0, 12, 17, 24} <= set(flat)


def test_attention_score_on_the_pooled_grid_keeps_each_frames_total():
    att = torch.rand(2, 729, generator=torch.Generator().manual_seed(3)).softmax(dim=1)
    a = frame_scores(torch.zeros(2, 196, 1), "attention", att, (27, 27))
    pooled = llava_pool(att[..., None].double(), (27, 27))[0][..., 0]
    torch.testing.assert_close(a, pooled * (att.sum(1, keepdim=True).double() / pooled.sum(1, keepdim=True)))
    torch.testing.assert_close(a.sum(1), att.sum(1).double())
    # native: the stored attention as it is
    assert torch.equal(frame_scores(torch.zeros(2, 729, 1), "attention", att, (27, 27)), att.double())


def test_attention_score_needs_the_stored_attention():
    x = torch.randn(2, 729, 4)
    r = get_reducer("prumerge+", score="attention")
    with pytest.raises(ValueError, match="--save-attention"):
        r(x, (27, 27))
    with pytest.raises(ValueError, match=r"attention must be \[2, 729\]"):
        r(x, (27, 27), attention=torch.rand(2, 196))
    assert get_reducer("prumerge+")(x, (27, 27)).n_visual() >= 2  # the default needs nothing else
    with pytest.raises(ValueError, match="valid: feature-mean, attention"):
        get_reducer("prumerge+", score="cls")
    with pytest.raises(ValueError, match="k must be >= 0"):
        get_reducer("prumerge+", k=-1)


# --------------------------------------------------------------------------------------------------
# the official code


def oracle_input(seed: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """As the oracle script built them: the CLS row of a softmax over N+1 keys (CLS column dropped) and
    random features, which also served as the keys."""
    N, C = ORACLE["N"], ORACLE["C"]
    g = torch.Generator().manual_seed(seed)
    cls_attn = (torch.randn(N + 1, generator=g) * sigma).softmax(dim=0)[1:]
    return cls_attn, torch.randn(N, C, generator=g)


@pytest.mark.parametrize("case", ORACLE["cases"], ids=[f"seed{c['seed']}" for c in ORACLE["cases"]])
def test_reproduces_the_official_code(case):
    """tests/data/prumerge_official.json: 42Shawn/LLaVA-PruMerge at 097c0411, clip_encoder.py's
    `token_prune_merge_advanced_plus` (adaptive path) from the CLS attention on, run unchanged outside the
    repository on one 24x24 image (N = 576, the paper's shape) with keys = features: its kept tokens, and
    for three seeds each kept token's 32 neighbours and every output token. Official tokens are not
    normalised (x_p + sum a_j x_j; the extra token sum a_j x_j): vtc's times the weight total match them."""
    a, x = oracle_input(case["seed"], case["sigma"])
    red = get_reducer("prumerge+", score="attention", grid="native")(x[None], (24, 24), attention=a[None])
    assert int(iqr_outliers(a[None].double()).sum()) == case["n_outliers"]
    got = rows(red)
    flat = [int(p[1]) * 24 + int(p[2]) for p in red.pos[:-1]]
    by_pos = dict(zip(flat, range(len(got)), strict=True))
    assert sorted(case["kept"]) == sorted(set(flat) & set(case["kept"])) and len(got) == len(case["kept"]) + 1
    if "neighbours" not in case:
        return
    ad = a.double()
    for i, (p, near) in enumerate(zip(case["kept"], case["neighbours"], strict=True)):
        src, _ = got[by_pos[p]]
        assert src == sorted([p, *near]), p
        total = 1.0 + float(ad[near].sum())
        expect = torch.tensor(case["tokens"][i])
        torch.testing.assert_close(red.tokens[by_pos[p]] * total, expect, atol=2e-5, rtol=1e-4)
    pruned = sorted(set(range(ORACLE["N"])) - set(case["kept"]))
    (extra,) = [n for n, (src, _) in enumerate(got) if src == pruned]
    total = float(ad[pruned].sum())
    torch.testing.assert_close(
        red.tokens[extra] * total, torch.tensor(case["tokens"][-1]), atol=2e-5, rtol=1e-4
    )


# --------------------------------------------------------------------------------------------------
# the paper's retained share


def test_paper_share_on_32_frames():
    """At the paper's outlier share (CLIP's CLS attention: 5.5% outliers, PruMerge+ ~25% of tokens), on the
    LLaVA-OV shape (32 frames x 729 -> 32 x 196 pooled): CLIP-like attention, softmax of 0.8 x N(0, 1)
    logits, keeps ~5% outliers and ~21% of the 6,272 tokens -- each frame |outliers u lattice| + 1."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 729, 16, generator=g)
    att = (torch.randn(32, 729, generator=g) * 0.8).softmax(dim=1)
    red = get_reducer("prumerge+", score="attention")(x, (27, 27), attention=att)
    assert red.base_grid == (32, 14, 14)
    a = frame_scores(torch.zeros(32, 196, 1), "attention", att, (27, 27))
    out = iqr_outliers(a)
    expect = sum(len(kept_indices(a[t], out[t])) + 1 for t in range(32))
    assert red.n_visual() == expect
    assert 0.04 < out.double().mean() < 0.07  # the paper's ~5.5% outliers
    assert 0.18 < red.n_visual() / 6272 < 0.28, red.n_visual()  # the paper's ~25%
    assert torch.equal(
        torch.bincount(red.pos[:-1, 0].long(), minlength=32) > 0, torch.ones(32, dtype=torch.bool)
    )
