"""ToMe, VidToMe and the pruning baselines: hand-built cases, the loop oracle, and the common contract."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

# importing the modules registers the methods (vtc.reducers/__init__ may not list them yet)
from vtc.reducers import prune, tome, vidtome  # noqa: F401
from vtc.reducers.base import KIND_VISUAL, llava_pool
from vtc.reducers.prune import RandomPrune, Uniform
from vtc.reducers.registry import get_reducer
from vtc.reducers.tome import ToMe, frame_budgets
from vtc.reducers.vidtome import VidToMe

_spec = importlib.util.spec_from_file_location(
    "tome_loop", Path(__file__).parents[1] / "benchmarks" / "reference" / "tome_loop.py"
)
tome_loop_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tome_loop_module)
tome_loop = tome_loop_module.tome_loop

NEW = ["tome", "vidtome", "uniform", "random"]
SHAPES = [(1, (27, 27)), (3, (5, 7)), (2, (4, 1))]


def groups(r):
    """The visual tokens' source lists."""
    return [r.src[r.indptr[n] : r.indptr[n + 1]].tolist() for n in (r.kind == KIND_VISUAL).nonzero()[:, 0]]


def random_orthogonal(C: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(C, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q.float()


# --------------------------------------------------------------------------------------------------
# the contract of tests/test_reducers.py, run here on the new methods with their defaults


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("T,grid", SHAPES, ids=[f"T{t}-{h}x{w}" for t, (h, w) in SHAPES])
def test_contract_defaults(name, T, grid):
    from test_reducers import test_contract as contract

    contract((name, {}), T, grid)


@pytest.mark.parametrize("name", NEW)
def test_float16_and_bad_input(name):
    from test_reducers import test_bad_input_is_refused as bad_input
    from test_reducers import test_float16_input_is_computed_in_float32 as float16

    float16((name, {}))
    bad_input(name)


@pytest.mark.parametrize(
    "cfg", [("tome", {"grid": "native", "budget": 7}), ("vidtome", {"window": 2, "ratio": 0.2})]
)
def test_contract_other_settings(cfg):
    from test_reducers import test_contract as contract

    contract(cfg, 3, (5, 7))


# --------------------------------------------------------------------------------------------------
# tome


def test_tome_merges_the_planted_pairs():
    """2x4 frames: A = slots 0,2,4,6, B = 1,3,5,7. Planted A-B pairs are near-parallel, the rest orthogonal."""
    C = 8
    x = torch.eye(C).repeat(2, 1, 1)  # [2, 8, 8]: every token orthogonal to every other
    x[0, 7] = 2 * x[0, 0] + 0.05 * x[0, 7]  # frame 0: A0 ~ B7, A4 ~ B1
    x[0, 4] = 3 * x[0, 1] + 0.05 * x[0, 4]
    x[1, 3] = 0.5 * x[1, 6] + 0.02 * x[1, 3]  # frame 1: A6 ~ B3, A2 ~ B5, A0 ~ B1
    x[1, 2] = 4 * x[1, 5] + 0.1 * x[1, 2]
    x[1, 0] = x[1, 1] - 0.03 * x[1, 0]
    x = x @ random_orthogonal(C, 0)  # a rotation keeps every cosine
    r = ToMe(budget=6 + 5, grid="native")(x, (2, 4))  # frame 0 keeps 6 (2 merges), frame 1 keeps 5 (3)
    expect = [[0, 7], [1, 4], [2], [3], [5], [6], [8, 9], [10, 13], [11, 14], [12], [15]]
    assert groups(r) == expect
    flat = x.reshape(16, C)
    torch.testing.assert_close(r.tokens[:-1], torch.stack([flat[g].mean(0) for g in expect]))
    assert r.pos[:-1, 0].tolist() == [0] * 6 + [1] * 5
    assert r.pos[:-1, 1:].tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 1], [1, 2]] + [
        [0, 0],
        [0, 2],
        [0, 3],
        [1, 0],
        [1, 3],
    ]


def test_tome_size_weighted_two_rounds_by_hand():
    """1x6 frame, budget 2. Round 1 (r = 3): 0->1, 2->1, 4->5; round 2 (r = 1) on the means
    g0 = (x0+x1+x2)/3 = (1, .2, 0) (size 3), x3, g2 = (0, .05, 1) (size 2): cos(g0, x3) = .196 >
    cos(g2, x3) = .050, so g0 joins x3 with weights 3:1."""
    x = torch.tensor(
        [[1.0, 0.2, 0.0], [1.0, 0.0, 0.0], [1.0, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.1, 1.0]]
    )[None]
    r = ToMe(budget=2, grid="native")(x, (1, 6))
    assert groups(r) == [[0, 1, 2, 3], [4, 5]]
    torch.testing.assert_close(r.weight, torch.tensor([0.25] * 4 + [0.5] * 2))
    g0 = torch.tensor([1.0, 0.2, 0.0])
    weighted = (3 * g0 + x[0, 3]) / 4  # (.75, .4, 0), not the unweighted (g0 + x3)/2 = (.5, .6, 0)
    torch.testing.assert_close(r.tokens[0], weighted)
    torch.testing.assert_close(r.tokens[1], torch.tensor([0.0, 0.05, 1.0]))
    assert r.pos[:-1].tolist() == [[0, 0, 0], [0, 0, 4]]
    # one round fewer (budget 3) stops after round 1
    assert groups(ToMe(budget=3, grid="native")(x, (1, 6))) == [[0, 1, 2], [3], [4, 5]]


@pytest.mark.parametrize("M", [3, 5, 17, 24, 35, 36, 50])
def test_tome_budget_is_exact(M):
    x = torch.randn(3, 35, 6, generator=torch.Generator().manual_seed(M))  # pooled: 3 x (3*4) = 36
    r = ToMe(budget=M)(x, (5, 7))
    assert r.n_visual() == min(M, 36)
    per_frame = torch.bincount(r.pos[:-1, 0].long(), minlength=3).tolist()
    q, rem = divmod(min(M, 36), 3)
    assert per_frame == [q + (t < rem) for t in range(3)]  # the first M % T frames get one more
    if M >= 36:  # no-op: every base token its own group
        assert r.src.tolist() == list(range(36)) and (r.weight == 1).all()
        assert torch.equal(r.tokens[:-1], llava_pool(x, (5, 7))[0].reshape(36, 6))


def test_tome_budget_below_frames_and_ratio():
    x = torch.randn(3, 35, 6)
    with pytest.raises(ValueError, match="at least one token per frame"):
        ToMe(budget=2)(x, (5, 7))
    assert ToMe()(x, (5, 7)).n_visual() == 3 * 6  # ratio 0.5 of 12 per frame
    assert ToMe(ratio=0.3)(x, (5, 7)).n_visual() == 3 * 4  # round(3.6)
    assert ToMe(ratio=0.01)(x, (5, 7)).n_visual() == 3  # at least one per frame
    for bad in [{"ratio": 0.0}, {"ratio": 1.5}, {"budget": 0}, {"grid": "hex"}]:
        with pytest.raises(ValueError):
            get_reducer("tome", **bad)


@pytest.mark.parametrize(
    "T,grid,budget,ratio",
    [
        (2, (6, 7), 20, 0.5),
        (3, (5, 5), None, 0.3),
        (1, (9, 8), 5, 0.5),
        (3, (4, 1), 4, 0.5),
        (2, (7, 9), 1, 0.5),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_tome_matches_loop_oracle(T, grid, budget, ratio, seed):
    H, W = grid
    x = torch.randn(T, H * W, 16, generator=torch.Generator().manual_seed(seed))
    budget = None if budget is None else max(budget, T)
    r = ToMe(budget=budget, ratio=ratio, grid="native")(x, grid)
    k = frame_budgets(T, H * W, budget, ratio, "tome")
    assert groups(r) == tome_loop(x, k.tolist())


def test_tome_matches_loop_oracle_on_pooled_smooth_features():
    from test_reducers import smooth_video

    x = smooth_video(4, 27, 27, 12, seed=1)
    r = ToMe(budget=4 * 49 + 3)(x, (27, 27))
    k = frame_budgets(4, 196, 4 * 49 + 3, 0.5, "tome")
    assert groups(r) == tome_loop(llava_pool(x, (27, 27))[0], k.tolist())


# --------------------------------------------------------------------------------------------------
# vidtome


def test_vidtome_merges_a_static_video_into_the_key_frames():
    T, H, W, C = 8, 2, 4, 6
    frame = torch.randn(H * W, C, generator=torch.Generator().manual_seed(0))
    x = frame.repeat(T, 1, 1)  # [8, 8, 6] static
    r = VidToMe(ratio=0.25, window=4, grid="native")(x, (H, W))  # 2 per frame -> 8 = N per window
    assert r.n_visual() == 2 * H * W
    N = H * W
    expect = [[t * N + i for t in range(w, w + 4)] for w in (0, 4) for i in range(N)]
    assert groups(r) == expect  # each token joined its own copy in the key frame
    assert r.pos[:-1, 0].tolist() == [0] * N + [4] * N
    torch.testing.assert_close(r.tokens[:-1], frame.repeat(2, 1))


def test_vidtome_stage2_and_window1():
    x = torch.randn(6, 25, 8, generator=torch.Generator().manual_seed(3))
    # window 1 (and a single frame) is ToMe itself
    for budget in [6, 40, 150]:
        a = VidToMe(budget=budget, window=1, grid="native")(x, (5, 5))
        b = ToMe(budget=budget, grid="native")(x, (5, 5))
        assert groups(a) == groups(b)
    a, b = VidToMe(budget=9, grid="native")(x[:1], (5, 5)), ToMe(budget=9, grid="native")(x[:1], (5, 5))
    assert groups(a) == groups(b)
    # windows [0..3], [4, 5]; budget 10 -> frames 2,2,2,2,1,1 -> windows keep 8 and 2: stage 1 merges
    # every non-key token, stage 2 runs ToMe inside the key frame
    r = VidToMe(budget=10, window=4, grid="native")(x, (5, 5))
    assert r.n_visual() == 10
    assert r.pos[:-1, 0].tolist() == [0] * 8 + [4] * 2
    assert sorted(s for g in groups(r) for s in g) == list(range(150))  # every token lands somewhere
    # budget 90 -> windows keep 60 and 30 (of 100 and 50): stage 1 only, unmerged tokens keep their frame
    r = VidToMe(budget=90, window=4, grid="native")(x, (5, 5))
    assert r.n_visual() == 90 and all(len(g) == 1 or g[0] // 25 in (0, 4) for g in groups(r))


# --------------------------------------------------------------------------------------------------
# uniform / random


def test_uniform_indices_by_hand():
    x = torch.arange(12, dtype=torch.float32).reshape(2, 6, 1)  # T=2, 2x3 native grid
    r = Uniform(budget=4, grid="native")(x, (2, 3))  # linspace(0, 11, 4) = 0, 3.67, 7.33, 11
    assert r.src.tolist() == [0, 4, 7, 11] and (r.weight == 1).all()
    assert r.tokens[:-1, 0].tolist() == [0.0, 4.0, 7.0, 11.0]
    assert r.pos[:-1].tolist() == [[0, 0, 0], [0, 1, 1], [1, 0, 1], [1, 1, 2]]
    r = Uniform(budget=5, grid="native")(x, (2, 3))  # 0, 2.75, 5.5 (half up), 8.25, 11
    assert r.src.tolist() == [0, 3, 6, 8, 11]
    assert Uniform(budget=50, grid="native")(x, (2, 3)).src.tolist() == list(range(12))
    assert Uniform(budget=1, grid="native")(x, (2, 3)).src.tolist() == [0]
    # defaults: a quarter of the pooled tokens
    assert Uniform()(torch.randn(2, 729, 4), (27, 27)).n_visual() == 98


def test_random_is_seeded_and_exact():
    x = torch.randn(3, 729, 4)
    a, b = RandomPrune(budget=100)(x, (27, 27)), RandomPrune(budget=100)(x, (27, 27))
    c = RandomPrune(budget=100, seed=1)(x, (27, 27))
    assert a.n_visual() == 100 and torch.equal(a.src, b.src) and not torch.equal(a.src, c.src)
    assert (a.src[1:] > a.src[:-1]).all()  # raster order
    pooled = llava_pool(x, (27, 27))[0].reshape(-1, 4)
    assert torch.equal(a.tokens[:-1], pooled[a.src])
    assert RandomPrune()(x, (27, 27)).n_visual() == 147  # round(0.25 * 588)
    assert RandomPrune(budget=10_000)(x, (27, 27)).n_visual() == 588
