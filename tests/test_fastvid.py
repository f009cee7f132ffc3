"""`fastvid` (FastVID, arXiv 2503.11187): DySeg and the anchor schedule by hand, density peaks against a
plain loop of the official formula, the merge rule on hand-built frames, the official code's outputs,
and the default retained share (9.7%)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vtc.reducers import get_reducer
from vtc.reducers.cluster import density_peaks
from vtc.reducers.fastvid import KNN, anchor_counts, segment_sizes
from vtc.reducers.registry import ReducerError

ORACLE = json.loads((Path(__file__).parent / "data" / "fastvid_official.json").read_text())
DEFAULTS = {"ratio": 0.10, "c": 8, "tau": 0.9, "d": 0.4, "p": 4, "beta": 0.6}  # the official eval.sh


def oracle_input(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T frames of 6 seeded scenes (5 random scene starts): scene base + 0.2 noise; attention = softmax of
    the scene's logits + 0.3 noise. Returns x [T, N, C] and attention [T, N]."""
    T, N, C = ORACLE["T"], ORACLE["N"], ORACLE["C"]
    g = torch.Generator().manual_seed(seed)
    starts = torch.randperm(T - 1, generator=g)[:5].add(1).sort().values.tolist()
    scene = torch.zeros(T, dtype=torch.long)
    for s in starts:
        scene[s:] += 1
    bases = torch.randn(6, N, C, generator=g)
    x = bases[scene] + 0.2 * torch.randn(T, N, C, generator=g)
    logits = 3 * torch.randn(6, N, generator=g)
    attn = (logits[scene] + 0.3 * torch.randn(T, N, generator=g)).softmax(dim=1)
    return x, attn


@pytest.mark.parametrize("case", ORACLE["cases"], ids=[str(c["seed"]) for c in ORACLE["cases"]])
def test_reproduces_the_official_code(case):
    """tests/data/fastvid_official.json: LunarShen/FastVID's LLaVA-OV block (commit a40a109c), run unchanged
    outside the repository on these inputs (global feature = the attention-weighted mean, as vtc's
    saliency=attention): the same kept tokens (anchors and salient ones) and the same merged tokens."""
    x, attn = oracle_input(case["seed"])
    params = {**DEFAULTS, **case["params"]}
    r = get_reducer("fastvid", saliency="attention", grid="native", **{k: str(v) for k, v in params.items()})
    red = r(x, (14, 14), attention=attn)  # native 14x14: the official code's 196 tokens per frame
    vis = red.kind == 0
    p = red.pos[vis].long()
    assert ((p[:, 0] * 14 + p[:, 1]) * 14 + p[:, 2]).tolist() == case["kept"]
    tok = red.tokens[vis]
    torch.testing.assert_close(tok.sum(1), torch.tensor(case["token_sum"]), atol=1e-4, rtol=0)
    v = torch.linspace(-1, 1, ORACLE["C"])
    torch.testing.assert_close(tok @ v, torch.tensor(case["token_dot"]), atol=1e-4, rtol=0)


def frames_with_similarities(sims: list[float]) -> torch.Tensor:
    """Unit vectors g_0..g_n in a plane with cos(g_i, g_{i+1}) = sims[i]: [n+1, 2]."""
    angles = torch.cat((torch.zeros(1), torch.tensor(sims, dtype=torch.float64).acos().cumsum(0)))
    return torch.stack((angles.cos(), angles.sin()), dim=1).float()


def test_segments_by_hand():
    g = frames_with_similarities([0.99, 0.5, 0.95, 0.97, 0.85])
    # c = 2: cut at the least similar transition (0.5, after frame 1); tau = 0.9 also cuts 0.85 (after 4)
    assert segment_sizes(g, 2, 0.9) == [2, 3, 1]
    assert segment_sizes(g, 3, 0.9) == [2, 3, 1]  # the 2 lowest are those two anyway
    assert segment_sizes(g, 4, 0.9) == [2, 1, 2, 1]  # + 0.95, after frame 2
    assert segment_sizes(g, 1, -1.0) == [6]  # no forced cut, nothing below tau
    assert segment_sizes(g, 1, 0.96) == [2, 1, 2, 1]  # 0.5, 0.95, 0.85 below 0.96
    assert segment_sizes(g, 99, -1.0) == [1] * 6  # c larger than the frames: every frame alone
    assert segment_sizes(g[:1], 8, 0.9) == [1]
    same = torch.ones(4, 2)  # equal similarities: the forced cut goes to the earliest transition
    assert segment_sizes(same, 2, 0.9) == [1, 3]


def test_anchor_frames_by_hand():
    # K = 7: a lone frame keeps its 7; L = 5, p = 4: A = 2 anchor frames (last, and 4 before) of
    # 35 // 2 = 17; L = 4: only the last frame, 28
    assert anchor_counts([1, 5, 4], 7, 4, 184) == [7, 17, 0, 0, 0, 17, 0, 0, 0, 28]
    assert anchor_counts([1, 5, 4], 7, 4, 20) == [7, 17, 0, 0, 0, 17, 0, 0, 0, 20]  # capped at M
    assert anchor_counts([3], 7, 2, 184) == [10, 0, 10]  # 21 // 2
    assert anchor_counts([3], 7, 1, 184) == [7, 7, 7]


def plain_density_order(y: torch.Tensor) -> list[int]:
    """The official formula spelled out in float64: rho = exp(-mean of the 4 smallest d^2, self
    included), delta = min distance to a denser token (the densest: the largest distance), by rho * delta
    descending, ties to the lower index."""
    M, C = y.shape
    d = [[float((y[i] - y[j]).double().norm()) / math.sqrt(C) for j in range(M)] for i in range(M)]
    rho = [math.exp(-sum(v * v for v in sorted(row)[:4]) / min(4, M)) for row in d]
    dmax = max(max(row) for row in d)
    delta = [min([d[i][j] for j in range(M) if rho[j] > rho[i]], default=dmax) for i in range(M)]
    return sorted(range(M), key=lambda i: (-rho[i] * delta[i], i))


def test_density_order_equals_the_plain_formula():
    g = torch.Generator().manual_seed(0)
    for M, C in ((6, 2), (30, 5), (50, 16)):
        y = torch.randn(2, M, C, generator=g)
        got = density_peaks(y, KNN)[0]
        for a in range(2):
            assert got[a].tolist() == plain_density_order(y[a]), (M, C)


def test_density_peaks_are_cluster_centres():
    # two clusters of 5 on a line (C = 1), each centre the densest of its cluster (sum of its 3 nearest
    # d^2: 0.0321 vs 0.0501 for 0.1; 0.1284 vs 0.2004 for 9.2): the tighter one's centre is the densest
    # (delta = the largest distance), the other centre next (delta ~ 8.9), their neighbours have
    # delta <= 0.11
    y = torch.tensor([[0.0], [0.1], [-0.1], [0.11], [-0.11], [9.0], [9.2], [8.8], [9.22], [8.78]])
    assert density_peaks(y[None], KNN)[0][0, :2].tolist() == [0, 5]


def hand_frame() -> tuple[torch.Tensor, torch.Tensor]:
    """One 2x5 frame: cluster A (centre 0, three tokens 0.1 around it), cluster B (centre 5, three tokens
    0.2 around it: looser), and two outliers 2 and 9 that get the attention. x [1, 10, 2], attention."""
    s = 0.5 * math.sqrt(3)
    x = torch.tensor(
        [
            [1.0, 0.0],
            [1.1, 0.0],
            [5.0, 5.0],
            [1 - 0.05, 0.1 * s],
            [1 - 0.05, -0.1 * s],
            [0.0, 1.0],
            [0.0, 1.2],
            [0.2 * s, 1 - 0.1],
            [-0.2 * s, 1 - 0.1],
            [-3.0, 2.0],
        ]
    )[None]
    attn = torch.full((1, 10), 0.01)
    attn[0, 2], attn[0, 9] = 0.5, 0.42
    return x, attn


def rows(red) -> list[tuple[list[int], list[float]]]:
    n = int((red.kind == 0).sum())
    return [
        (
            red.src[red.indptr[i] : red.indptr[i + 1]].tolist(),
            red.weight[red.indptr[i] : red.indptr[i + 1]].tolist(),
        )
        for i in range(n)
    ]


def test_one_frame_by_hand():
    """ratio 0.4: R = 4 tokens; d = 0.5: 2 salient (the attended outliers 2 and 9) + 2 anchors (the two
    centres), each absorbing its cluster (n = 4, itself included): w = max(1/5, 0.6) = 0.6, so the anchor
    weighs 0.6 + 0.4/4 = 0.7 and every other member 0.1. Output in raster order of the kept tokens."""
    x, attn = hand_frame()
    r = get_reducer("fastvid", ratio=0.4, d=0.5, saliency="attention", grid="native")
    red = r(x, (2, 5), attention=attn)
    got = rows(red)
    assert [src for src, _ in got] == [[0, 1, 3, 4], [2], [5, 6, 7, 8], [9]]
    torch.testing.assert_close(torch.tensor(got[0][1]), torch.tensor([0.7, 0.1, 0.1, 0.1]))
    torch.testing.assert_close(torch.tensor(got[2][1]), torch.tensor([0.7, 0.1, 0.1, 0.1]))
    a = 0.6 * x[0, 0] + 0.4 * x[0, [0, 1, 3, 4]].mean(0)
    torch.testing.assert_close(red.tokens[0], a)
    assert torch.equal(red.tokens[1], x[0, 2]) and red.n_llm_tokens == 5
    # beta = 0: w = 1/(n+1) = 0.2, the anchor counted twice (official): 0.2 + 0.8/4 = 0.4, others 0.2
    red0 = get_reducer("fastvid", ratio=0.4, d=0.5, beta=0.0, saliency="attention", grid="native")(
        x, (2, 5), attention=attn
    )
    torch.testing.assert_close(torch.tensor(rows(red0)[0][1]), torch.tensor([0.4, 0.2, 0.2, 0.2]))


def test_feature_saliency_by_hand():
    """saliency=feature: the query is the frame's mean token, (0.6, 1.1); dot products: token 2 8.5,
    token 6 1.32, token 5 1.1, token 9 0.4, ... so 2 and 6 are kept unchanged, not 9."""
    x, _ = hand_frame()
    red = get_reducer("fastvid", ratio=0.4, d=0.5, grid="native")(x, (2, 5))
    singles = [src for src, w in rows(red) if w == [1.0]]
    assert [2] in singles and [6] in singles
    assert red.n_visual() == 4


def test_a_segment_merges_into_its_anchor_frames():
    """Three copies of the hand frame: one segment (similarity 1, c = 1). ratio 0.3, d = 0.34: R = 3, 2
    salient + K = 1; p = 2: anchor frames 2 and 0 get 3*1 // 2 = 1 anchor each, the densest token (centre
    A, token 0 of its frame), and each absorbs all 24 non-salient tokens of the segment: weights 0.6 +
    0.4/24 for itself, 0.4/24 for the others."""
    x, attn = hand_frame()
    x3, a3 = x.expand(3, -1, -1).clone(), attn.expand(3, -1).clone()
    r = get_reducer("fastvid", ratio=0.3, d=0.34, c=1, p=2, saliency="attention", grid="native")
    red = r(x3, (2, 5), attention=a3)
    got = rows(red)
    others = [i + 10 * t for t in range(3) for i in (0, 1, 3, 4, 5, 6, 7, 8)]
    assert [src for src, _ in got] == [others, [2], [9], [12], [19], others, [22], [29]]
    w = torch.full((24,), 0.4 / 24)
    w[0] += 0.6
    torch.testing.assert_close(torch.tensor(got[0][1]), w)
    assert red.pos[0].tolist() == [0, 0, 0] and red.pos[5].tolist() == [2, 0, 0]
    # p = 4: one anchor frame, the last, with all 3 anchors' worth (both centres + one more)
    red4 = get_reducer("fastvid", ratio=0.3, d=0.34, c=1, p=4, saliency="attention", grid="native")(
        x3, (2, 5), attention=a3
    )
    assert red4.n_visual() == 6 + 3 and red4.pos[red4.kind == 0][:, 0].tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 2]


def test_pooled_attention_is_llava_onevision_pooling():
    """On the pooled grid the stored 27x27 attention is pooled as the official get_attn_2dPool does
    (bilinear to 14x14): the salient tokens are its top 12 per frame (of R = 19)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 729, 8, generator=g)
    attn = torch.rand(2, 729, generator=g).softmax(dim=1)
    red = get_reducer("fastvid", saliency="attention")(x, (27, 27), attention=attn)
    pooled = F.interpolate(attn.view(2, 1, 27, 27), size=(14, 14), mode="bilinear").view(2, 196)
    top = {int(i) + 196 * t for t in range(2) for i in pooled[t].topk(12).indices}
    singles = {
        int(red.src[red.indptr[n]]) for n in range(red.n_visual()) if red.indptr[n + 1] - red.indptr[n] == 1
    }
    assert top <= singles


def test_default_keeps_9_7_percent_of_32_frames():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 729, 16, generator=g)  # unrelated frames: every frame is its own segment
    red = get_reducer("fastvid")(x, (27, 27))
    assert red.base_grid == (32, 14, 14) and red.base == "pooled"
    assert red.n_visual() == 32 * 19 == 608  # 12 salient + 7 anchors per frame: 9.7% of 6,272
    # a static video: c = 8 forced segments; a segment of L frames has A = ceil(L/4) anchor frames of
    # 7L // A anchors, so it loses at most A - 1 tokens to the rounding: at most 8 in all
    still = torch.randn(1, 729, 16, generator=g) + 0.05 * torch.randn(32, 729, 16, generator=g)
    red = get_reducer("fastvid")(still, (27, 27))
    assert 608 - 8 <= red.n_visual() <= 608


def test_errors_are_one_line():
    x, attn = hand_frame()
    with pytest.raises(ReducerError, match="--save-attention"):
        get_reducer("fastvid", saliency="attention")(x, (2, 5))
    with pytest.raises(ReducerError, match=r"attention must be \[1, 10\]"):
        get_reducer("fastvid", saliency="attention")(x, (2, 5), attention=attn[:, :9])
    for key, value in [("ratio", 0), ("c", 0), ("tau", 1.5), ("d", -0.1), ("p", 0), ("beta", 2)]:
        with pytest.raises(ReducerError, match=f"fastvid: {key} must"):
            get_reducer("fastvid", **{key: value})
    with pytest.raises(ReducerError, match="valid: feature, attention"):
        get_reducer("fastvid", saliency="cls")


def test_decision_flops_by_hand():
    """The hand frame (T = 1, N = 10, C = 2; 2 salient, M = 8 candidates, 2 anchors absorbing 8 tokens):
    global feature 2*10*2 = 40, its norm 4 (no adjacent pair), 8 x 8 distances + 8 norms 2*2*72 = 288,
    2 anchors x 8 members 2*2*16 = 64, the candidates' norms 2*2*8 = 32; feature saliency adds 2*2*10."""
    x, attn = hand_frame()
    r = get_reducer("fastvid", ratio=0.4, d=0.5, saliency="attention", grid="native")
    assert r.decision_flops(r(x, (2, 5), attention=attn), 2) == 40 + 4 + 288 + 64 + 32
    f = get_reducer("fastvid", ratio=0.4, d=0.5, grid="native")
    assert f.decision_flops(f(x, (2, 5)), 2) == 40 + 4 + 40 + 288 + 64 + 32
