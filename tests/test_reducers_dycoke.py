"""DyCoke TTM and FrameFusion merging: the shared contract, hand-built cases, and DyCoke against the loop oracle."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

# the shared contract checks of tests/test_reducers.py (tests/ is on sys.path under pytest), called as
# plain functions under names pytest does not collect a second time
from test_reducers import SHAPES, fields
from test_reducers import test_bad_input_is_refused as contract_bad_input
from test_reducers import test_contract as contract
from test_reducers import test_float16_input_is_computed_in_float32 as contract_float16
from test_reducers import test_reducer_config_round_trips as contract_config

import vtc.reducers.dycoke  # noqa: F401  (import registers the methods before the lead's __init__ does)
import vtc.reducers.framefusion  # noqa: F401
from vtc.reducers import KIND_VISUAL, get_reducer, llava_pool
from vtc.reducers.base import reduction_from_groups
from vtc.reducers.dycoke import DyCoke
from vtc.reducers.framefusion import FrameFusion

_spec = importlib.util.spec_from_file_location(
    "dycoke_loop", Path(__file__).parents[1] / "benchmarks" / "reference" / "dycoke_loop.py"
)
_loop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_loop)
dycoke_ttm_loop = _loop.dycoke_ttm_loop

CONFIGS = [
    ("dycoke", {}),
    ("dycoke", {"merge": True}),
    ("dycoke", {"odd": "keep", "grid": "native", "k": 0.5}),
    ("dycoke", {"official_offset": True, "window": 6}),
    ("framefusion", {}),
    ("framefusion", {"grid": "native", "threshold": 0.3}),
    ("framefusion", {"budget": 5}),
]


def ids(cfg):
    name, params = cfg
    return name + "".join(f"-{k}={v}" for k, v in params.items())


@pytest.mark.parametrize("cfg", CONFIGS, ids=[ids(c) for c in CONFIGS])
def test_contract_holds(cfg):
    for T, grid in SHAPES:
        contract(cfg, T, grid)
    contract_float16(cfg)
    contract_config(cfg)
    contract_bad_input(cfg[0])


def visual_pos(r):
    """Sorted (t, n) of the visual tokens' pos, n flattened on the base grid."""
    _, _, Wb = r.base_grid
    p = r.pos[r.kind == KIND_VISUAL].long()
    return sorted(zip(p[:, 0].tolist(), (p[:, 1] * Wb + p[:, 2]).tolist(), strict=True))


# --------------------------------------------------------------------------------------------------
# dycoke


def test_dycoke_repeated_frame_keeps_the_planted_dissimilar_tokens():
    g = torch.Generator().manual_seed(0)
    f0 = torch.randn(16, 8, generator=g)
    f1 = f0.clone()
    planted = [1, 5, 10, 15]
    f1[planted] = -f0[planted]  # cos = -1: the least similar; every other position has cos = 1
    x = torch.stack((f0, f1))  # [2, 16, 8], grid 4x4
    r = DyCoke(k=0.75, grid="native")(x, (4, 4))
    assert int((1 - 0.75) * 16) == 4 and r.n_visual() == 16 + 4 and r.n_llm_tokens == 21
    assert visual_pos(r) == [(0, n) for n in range(16)] + [(1, n) for n in planted]
    assert torch.equal(r.tokens[16:20], f1[planted])  # pruning, not merging: the raw tokens
    # 3 of 16 at k=0.8: int(0.2*16) = 3 of the 4 planted ones, which 3 of the tie as the official
    # `topk(largest=False)` on the official cosine picks them
    r3 = DyCoke(k=0.8, grid="native")(x, (4, 4))
    sim = F.cosine_similarity(F.normalize(f0, dim=-1), F.normalize(f1, dim=-1), dim=-1)
    picked = sorted(sim.topk(3, largest=False).indices.tolist())
    assert set(picked) < set(planted) and visual_pos(r3)[16:] == [(1, n) for n in picked]


def test_dycoke_t32_keeps_3098_of_6272():
    x = torch.randn(32, 729, 4, generator=torch.Generator().manual_seed(1))
    r = DyCoke()(x, (27, 27))
    assert r.base == "pooled" and r.base_grid == (32, 14, 14)
    assert r.n_visual() == 3098 and r.n_llm_tokens == 3099  # 16*196 + 16*58 - 7*138
    per_frame = torch.bincount(r.pos[:-1, 0].long(), minlength=32)
    expect = [196, 58, 58, 58] * 7 + [196, 58, 196, 58]  # the last window's frame 30 is not re-pruned
    assert per_frame.tolist() == expect
    assert DyCoke(merge=True)(x, (27, 27)).n_visual() == 3098  # merging keeps the count


def test_dycoke_pruning_fast_path_is_reduction_from_groups():
    x = torch.randn(7, 729, 8, generator=torch.Generator().manual_seed(6))
    r = DyCoke()(x, (27, 27))
    kept = torch.zeros(7 * 196, dtype=torch.long)
    kept[r.src] = 1
    group = torch.where(kept.bool(), kept.cumsum(0) - 1, -1)
    feats = llava_pool(x, (27, 27))[0].reshape(-1, 8)
    ref = reduction_from_groups(feats, group, torch.ones(7 * 196), "pooled", (7, 14, 14), 7 * 729)
    for a, b in zip(fields(r), fields(ref), strict=True):
        assert torch.equal(a, b)
    assert (r.base, r.base_grid, r.n_input_tokens) == (ref.base, ref.base_grid, ref.n_input_tokens)


def test_dycoke_odd_t():
    x = torch.randn(5, 16, 8, generator=torch.Generator().manual_seed(2))
    official = DyCoke(k=0.5, grid="native")(x, (4, 4))
    keep = DyCoke(k=0.5, grid="native", odd="keep")(x, (4, 4))
    # pairs (0,1) (2,3): 16+8+16+8; window 0 (range(0, 1, 4)) re-prunes frame 2 to 8; frame 4 dropped
    assert official.n_visual() == 16 + 8 + 8 + 8
    assert official.base_grid == (5, 4, 4) and 4 not in official.pos[:-1, 0].tolist()
    assert keep.n_visual() == 40 + 16
    assert visual_pos(keep) == visual_pos(official) + [(4, n) for n in range(16)]
    # T=1: a lone frame is kept (the official code raises there)
    for odd in ("official", "keep"):
        assert DyCoke(odd=odd, grid="native")(x[:1], (4, 4)).n_visual() == 16


def test_dycoke_merge_by_hand():
    a0, a1 = [1.0, 0.0], [0.0, 1.0]
    b0, b1 = [1.0, 0.1], [-1.0, 0.0]  # cos(a0, b0) ~ 0.995, cos(a1, b1) = 0: b1 is kept, b0 merges into a0
    x = torch.tensor([[a0, a1], [b0, b1]])  # [2, 2, 2], grid 1x2
    pruned = DyCoke(k=0.5, grid="native")(x, (1, 2))
    assert pruned.tokens[:-1].tolist() == [a0, a1, b1]
    r = DyCoke(k=0.5, grid="native", merge=True)(x, (1, 2))
    torch.testing.assert_close(r.tokens[:-1], torch.tensor([[1.0, 0.05], a1, b1]))
    assert r.indptr.tolist() == [0, 2, 3, 4, 4]
    assert r.src.tolist() == [0, 2, 1, 3] and r.weight.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert r.pos[:-1].tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 1]]


def test_dycoke_merge_follows_chains_to_the_window_start():
    # one token per frame, k=0.7 keeps int(0.3) = 0 of it: frames 1, 2, 3 fold into 0 (3 via 2, which
    # pass 2 prunes against 0) and frame 5 into 4; the last window's frame 6 is not re-pruned
    x = torch.arange(1.0, 9.0).reshape(8, 1, 1)
    r = DyCoke(grid="native", merge=True)(x, (1, 1))
    assert r.tokens[:-1, 0].tolist() == [2.5, 5.5, 7.5]  # means of 1..4, 5..6, 7..8
    assert r.pos[:-1, 0].tolist() == [0, 4, 6]
    assert DyCoke(grid="native")(x, (1, 1)).tokens[:-1, 0].tolist() == [1.0, 5.0, 7.0]


@pytest.mark.parametrize(
    "params",
    [{}, {"k": 0.5}, {"k": 0.3, "window": 6}, {"official_offset": True}, {"k": 0.9, "window": 2}],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()) or "default",
)
def test_dycoke_matches_loop_oracle(params):
    for T in (1, 2, 3, 4, 5, 8, 9, 13, 17):
        x = torch.randn(T, 20, 16, generator=torch.Generator().manual_seed(T))
        r = DyCoke(grid="native", **params)(x, (4, 5))
        oracle = dycoke_ttm_loop(x, **params)
        assert visual_pos(r) == sorted(oracle), (T, params)
        assert len(oracle) == r.n_visual()


def test_dycoke_official_offset_uses_the_previous_pair():
    x = torch.randn(6, 20, 16, generator=torch.Generator().manual_seed(3))
    shifted = visual_pos(DyCoke(grid="native", official_offset=True)(x, (4, 5)))
    plain = visual_pos(DyCoke(grid="native")(x, (4, 5)))
    # frame 3 keeps the positions pair (0, 1) chose, frame 1 those of the last pair (4, 5)
    assert [n for t, n in shifted if t == 3] == [n for t, n in plain if t == 1]
    assert [n for t, n in shifted if t == 1] == [n for t, n in plain if t == 5]


def test_dycoke_bad_params():
    for bad in [{"k": 1.5}, {"window": 3}, {"grid": "hex"}, {"odd": "drop"}]:
        with pytest.raises(ValueError):
            get_reducer("dycoke", **bad)


# --------------------------------------------------------------------------------------------------
# framefusion


def test_framefusion_static_video_is_one_token_per_position():
    frame = torch.randn(9, 4, generator=torch.Generator().manual_seed(4))
    x = frame.repeat(4, 1, 1)  # [4, 9, 4]
    r = FrameFusion(grid="native")(x, (3, 3))
    assert r.n_visual() == 9
    torch.testing.assert_close(r.tokens[:-1], frame)
    assert r.pos[:-1, 0].tolist() == [0] * 9  # the earliest member
    assert r.src[:4].tolist() == [0, 9, 18, 27] and r.weight[:4].tolist() == [0.25] * 4


def test_framefusion_changing_video_stays_intact():
    x = torch.eye(8)[:, None, :].repeat(1, 6, 1)  # frame t is e_t at every position: cos = 0
    r = FrameFusion(grid="native")(x, (2, 3))
    assert r.n_visual() == 48
    assert torch.equal(r.tokens[:-1], x.reshape(48, 8)) and torch.equal(r.src, torch.arange(48))


def test_framefusion_chain_and_budget():
    # grid 1x3, T=4; position 0 static, position 1 changes at t=2, position 2 at every frame.
    # position 0 drifts by 20 degrees a frame: cos 0.94 > 0.9 between neighbours, 0.5 from frame 0 to 3,
    # so only a chain (never the group mean or the first member) keeps it one group
    ang = torch.deg2rad(torch.arange(4.0) * 20)
    x = torch.zeros(4, 3, 4)
    x[:, 0, 0], x[:, 0, 1] = ang.cos(), ang.sin()
    x[:, 1, 2] = 1.0
    x[2:, 1, 2], x[2:, 1, 3] = 0.0, 1.0
    x[:, 2] = torch.eye(4)
    r = FrameFusion(grid="native")(x, (1, 3))
    # groups in raster order of the first member: (0,0)x4, (0,1)x2, (0,2), (1,2), (2,1)x2, (2,2), (3,2)
    assert r.indptr.diff()[:-1].tolist() == [4, 2, 1, 1, 2, 1, 1]
    assert r.pos[:-1, 0].tolist() == [0, 0, 0, 1, 2, 2, 3]
    torch.testing.assert_close(r.tokens[0], x[:, 0].mean(0))

    b3 = FrameFusion(grid="native", budget=3)(x, (1, 3))  # the three largest: sizes 4, 2, 2
    assert b3.n_visual() == 3 and b3.indptr.diff()[:-1].tolist() == [4, 2, 2]
    assert b3.pos[:-1].tolist() == [[0, 0, 0], [0, 0, 1], [2, 0, 1]]
    b4 = FrameFusion(grid="native", budget=4)(x, (1, 3))  # + the earliest singleton, (0, 0, 2)
    assert b4.pos[:-1].tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [2, 0, 1]]
    assert FrameFusion(grid="native", budget=100)(x, (1, 3)).n_visual() == 7  # fewer groups than budget


@pytest.mark.parametrize("budget", [1, 17, 196, 500])
def test_framefusion_budget_is_exact(budget):
    x = torch.randn(4, 729, 8, generator=torch.Generator().manual_seed(5)).cumsum(0)  # some merging
    r = get_reducer("framefusion", budget=str(budget))(x, (27, 27))
    full = FrameFusion()(x, (27, 27)).n_visual()
    assert full < 4 * 196
    assert r.n_visual() == min(budget, full)


def test_framefusion_params():
    assert get_reducer("framefusion", budget="none") == FrameFusion()
    assert get_reducer("framefusion", budget="12").budget == 12
    for bad in [{"budget": 0}, {"budget": "many"}, {"grid": "hex"}]:
        with pytest.raises(ValueError):
            get_reducer("framefusion", **bad)
    assert math.isclose(FrameFusion().threshold, 0.9)
