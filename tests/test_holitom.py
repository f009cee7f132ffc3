"""`holitom` (HoliTom, arXiv 2505.21334, outer-LLM stage): the segmentation DP and a merge worked by hand,
the official code's output reproduced, and the default retained share (10%)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vtc.reducers import get_reducer
from vtc.reducers.holitom import segment_frames, static_counts

ORACLE = json.loads((Path(__file__).parent / "data" / "holitom_official.json").read_text())


def oracle_input(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scenes of 1-5 frames sharing a base, a noise level per position (some static, some not), and a
    random attention: the inputs the oracle script gave the official code."""
    T, N, C = ORACLE["T"], ORACLE["N"], ORACLE["C"]
    g = torch.Generator().manual_seed(seed)
    sigma = torch.rand(N, 1, generator=g) * 1.6 + 0.05
    x, t = [], 0
    while t < T:
        L = int(torch.randint(1, 6, (1,), generator=g))
        base = torch.randn(N, C, generator=g)
        for _ in range(min(L, T - t)):
            x.append(base + sigma * torch.randn(N, C, generator=g))
            t += 1
    attn = torch.rand(T, N, generator=g).softmax(dim=1)
    return torch.stack(x), attn


@pytest.mark.parametrize("case", ORACLE["cases"], ids=lambda c: f"seed{c['seed']}")
def test_reproduces_the_official_code(case):
    """tests/data/holitom_official.json: cokeshao/HoliTom (commit e9b2972), holitom/llava_arch.py run
    unchanged outside the repository on seeded 8-frame 14x14 inputs (their `select_static_windows`,
    `get_static_dynamic_features` and `holitom`, one_token newline): the segments, the kept dynamic
    tokens and the merged static tokens (two value fingerprints each). Only inputs whose result the
    official density noise does not change (two global seeds) were kept: all of them were."""
    cfg = case["config"]
    x, attn = oracle_input(case["seed"])
    T, N = x.shape[:2]
    unit = F.normalize(x, dim=-1)
    static = F.cosine_similarity(unit[:-1], unit[1:], dim=-1) > cfg["tau"]  # the official expression
    segments, removed = segment_frames(static, cfg.get("max_window_size", 1024))
    assert [list(s) for s in segments] == case["segments"] and removed == case["removed"]

    r = get_reducer(
        "holitom",
        ratio=cfg["retain_ratio"],
        tau=cfg["tau"],
        beta=None if case.get("no_beta") else cfg["Beta"],
        k=cfg["K"],
        max_window=cfg.get("max_window_size", 1024),
        grid="native",  # the official code's input is already the pooled 14x14 grid
    )
    red = r(x, (14, 14), attention=attn)
    rows = list(zip(red.visual_groups(), red.tokens[: red.n_visual()], red.pos.tolist(), strict=False))
    dynamic = sorted([src[0] // N, src[0] % N] for src, _, _ in rows if len(src) == 1)
    assert dynamic == case["dynamic"]
    static_rows = [(p, tok) for src, tok, p in rows if len(src) > 1]
    assert len(static_rows) == len(case["static"])
    unmatched = list(static_rows)
    for t, p, v0, vsum in case["static"]:
        # official position: the centre in the segment's first frame; vtc's pos is the largest-weight
        # source, the same with beta (not with the plain mean, where the smallest member wins)
        hit = [
            i
            for i, (pos, tok) in enumerate(unmatched)
            if pos[0] == t
            and (case.get("no_beta") or pos[1] * 14 + pos[2] == p)
            and abs(float(tok[0]) - v0) < 1e-4
            and abs(float(tok.sum()) - vsum) < 1e-3
        ]
        assert len(hit) == 1, (t, p, v0, vsum)
        unmatched.pop(hit[0])


def test_static_counts_and_segments_by_hand():
    # 4 frames, 2 positions: position 0 alike in pairs (0,1), (1,2); position 1 in pair (0,1) only
    static = torch.tensor([[True, True], [True, False], [False, False]])
    P = static_counts(static)
    assert P[0][1:] == [2, 2, 0] and P[1][2:] == [1, 0] and P[2][3] == 0
    # [0,1] removes 2, as does [0,2]: the tie keeps the earlier candidate (frame 2 alone)
    assert segment_frames(static, 1024) == ([(0, 1), (2, 2), (3, 3)], 2)
    assert segment_frames(static, 1) == ([(0, 0), (1, 1), (2, 2), (3, 3)], 0)


def test_segmentation_is_global_not_greedy():
    # 5 frames, 3 positions. Greedy from frame 0 takes [0,2] (pos 0 static: removes 2) and then [3,4]
    # (removes 1): 3. The DP prefers [0,0] + [1,4]: positions 1 and 2 static over 1..4: 2 x 3 = 6.
    static = torch.tensor(
        [[True, False, False], [True, True, True], [False, True, True], [False, True, True]]
    )
    assert segment_frames(static, 1024) == ([(0, 0), (1, 4)], 6)
    # windows of at most 3 frames: [0,0]+[1,2]+[3,4] and [0,1]+[2,4] both remove 5; at the last frame
    # the shorter window [3,4] comes first and the tie keeps it
    assert segment_frames(static, 3) == ([(0, 0), (1, 2), (3, 4)], 3 + 2)


def test_merge_worked_by_hand():
    # 2 frames on a 2x2 grid: positions 0-2 repeat exactly (static), position 3 changes (dynamic).
    f0 = torch.tensor([[1.0, 0.0], [1.0, 0.2], [-1.0, 0.0], [1.0, 0.0]])
    f1 = f0.clone()
    f1[3] = torch.tensor([0.0, 1.0])  # cosine 0 with frame 0
    x = torch.stack([f0, f1])
    attn = torch.full((2, 4), 0.25)
    r = get_reducer("holitom", ratio=0.5, grid="native")
    red = r(x, (2, 2), attention=attn)
    # one segment [0, 1] removes 3 tokens: r' = 0.5 / (5/8) = 0.8. Dynamic: ceil(1 x 0.8) = 1 per frame;
    # static: round(3 x 0.8) = 2 DPC-KNN centres. Positions 0 and 1 are each other's nearest neighbour
    # with equal densities (index 0 counts as denser): centres 0 (dist max) and 2 (far), 1 joins 0.
    assert red.visual_groups() == [[0, 1, 4, 5], [2, 6], [3], [7]]
    torch.testing.assert_close(red.weight, torch.tensor([0.3, 0.2, 0.3, 0.2, 0.5, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(red.tokens[0], 0.6 * f0[0] + 0.4 * f0[1])  # beta x centre + (1-beta) x member
    assert red.pos[:4].tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1], [1, 1, 1]]
    # beta=None: the plain mean of centre and members
    red = get_reducer("holitom", ratio=0.5, grid="native", beta=None)(x, (2, 2), attention=attn)
    torch.testing.assert_close(red.weight[:4], torch.full((4,), 0.25))
    # flops: cosines of 4 pairs + 8 norms; segment: temporal mean C*L*S_s + distances 2*C*S_s^2
    assert r.decision_flops(red, 2) == 2 * 2 * (4 + 8) + 2 * 2 * 3 + 2 * 2 * 9


def test_without_redundancy_each_frame_keeps_its_most_attended():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 16, 32, generator=g)  # independent frames: no position is static
    attn = torch.rand(3, 16, generator=g)
    red = get_reducer("holitom", ratio=0.25, grid="native")(x, (4, 4), attention=attn)
    kept = [sorted(s[0] % 16 for s in red.visual_groups() if s[0] // 16 == t) for t in range(3)]
    assert kept == [sorted(attn[t].topk(4).indices.tolist()) for t in range(3)]
    assert torch.equal(red.weight, torch.ones_like(red.weight))


def test_a_fully_static_segment_keeps_a_token_per_frame():
    # 2 identical frames of 2 tokens: round(2 x 0.2) = 0 centres officially; vtc keeps min(S_s, L) = 2
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]).repeat(2, 1, 1)
    red = get_reducer("holitom", grid="native")(x, (1, 2), attention=torch.ones(2, 2))
    assert red.visual_groups() == [[0, 2], [1, 3]]


def test_default_keeps_a_tenth_of_32_frames():
    g = torch.Generator().manual_seed(1)
    attn = torch.rand(32, 729, generator=g).softmax(dim=1)
    r = get_reducer("holitom")
    x = torch.randn(32, 729, 16, generator=g)  # no redundancy: ceil(19.6) = 20 per frame
    red = r(x, (27, 27), attention=attn)
    assert red.base_grid == (32, 14, 14) and red.n_visual() == 640
    # 4 scenes of 8 frames with small changes: most tokens merge in time, the rest is rescaled to 10%
    base = torch.randn(4, 729, 16, generator=g)
    x = torch.stack([base[t // 8] + 0.3 * torch.randn(729, 16, generator=g) for t in range(32)])
    red = r(x, (27, 27), attention=attn)
    assert any(len(set(s // 196 for s in src)) > 1 for src in red.visual_groups())  # temporal merges
    assert 0.1 * 6272 - 16 <= red.n_visual() <= 0.1 * 6272 + 48, red.n_visual()


def test_needs_attention_and_checks_parameters():
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="needs attention"):
        get_reducer("holitom")(x, (2, 2))
    with pytest.raises(ValueError, match=r"attention must be \[2, 4\]"):
        get_reducer("holitom")(x, (2, 2), attention=torch.ones(2, 5))
    for bad in ({"ratio": 0}, {"tau": 1.5}, {"beta": 2}, {"k": 0}, {"max_window": 0}):
        with pytest.raises(ValueError):
            get_reducer("holitom", **bad)
