"""Reducers: the contract every registered method meets, then each method against independent references."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from vtc.errors import VtcError
from vtc.reducers import (
    KIND_MARKER,
    KIND_NEWLINE,
    KIND_VISUAL,
    Reduction,
    get_reducer,
    interp_matrix,
    list_reducers,
    llava_pool,
    reducer_config,
)
from vtc.reducers.dyntok import DynTok

# every registered method with its defaults (later methods get the contract for free), plus the
# non-default settings of the methods that exist now
CONFIGS = [(name, {}) for name in list_reducers()] + [
    ("pool", {"stride": 3}),
    ("pool", {"stride": 3, "mode": "avg"}),
    ("pool", {"stride": 1}),
    ("dyntok", {"grid": "native", "threshold": 0.3}),
    ("dyntok", {"marker": False}),
    ("divprune", {"budget": 5}),
    ("divprune", {"grid": "native", "ratio": 0.3}),
    ("fastvid", {"grid": "native", "saliency": "attention", "p": 1}),
    ("holitom", {"grid": "native", "beta": None}),
    ("prumerge+", {"grid": "native", "score": "attention", "k": 4}),
    ("prunevid", {"grid": "native", "cluster_above": 0}),
]
SHAPES = [(1, (27, 27)), (3, (5, 7)), (2, (4, 1))]  # T=1, odd T + non-square, a one-column grid


def smooth_video(T: int, H: int, W: int, C: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """[T, H*W, C] features whose neighbours are correlated (like SigLIP), so merging decisions vary."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(T, 1, 1, C, generator=g)
    walk = torch.randn(T, H, W, C, generator=g).cumsum(2) * 0.35  # random walk along each row
    return (base + walk + 0.3 * torch.randn(T, H, W, C, generator=g)).reshape(T, H * W, C).to(dtype)


def base_features(r: Reduction, x: torch.Tensor, grid) -> torch.Tensor:
    """The base-grid features the plan indexes: [T*Hb*Wb, C] float32."""
    if r.base == "pooled":
        return llava_pool(x, grid)[0].reshape(-1, x.shape[-1])
    return x.float().reshape(-1, x.shape[-1])


def fields(r: Reduction):
    return (r.tokens, r.kind, r.pos, r.indptr, r.src, r.weight)


def row_of_entries(r: Reduction) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(r.n_llm_tokens), r.indptr[1:] - r.indptr[:-1])


def reduce(name, params, x, grid):
    """Call a reducer, giving methods that need per-video arrays (e.g. attention) seeded synthetic ones."""
    r = get_reducer(name, **params)
    aux = {}
    if "attention" in r.needs:
        g = torch.Generator().manual_seed(x.shape[0] * 1000 + x.shape[1])
        aux["attention"] = torch.rand(x.shape[0], x.shape[1], generator=g).softmax(dim=1)
    return r(x, grid, **aux)


def ids(cfg):
    name, params = cfg
    return name + "".join(f"-{k}={v}" for k, v in params.items())


# --------------------------------------------------------------------------------------------------
# the contract


@pytest.mark.parametrize("cfg", CONFIGS, ids=[ids(c) for c in CONFIGS])
@pytest.mark.parametrize("T,grid", SHAPES, ids=[f"T{t}-{h}x{w}" for t, (h, w) in SHAPES])
def test_contract(cfg, T, grid):
    name, params = cfg
    H, W = grid
    C = 6
    x = smooth_video(T, H, W, C, seed=T * 100 + H)
    r = reduce(name, params, x, grid)
    N = r.n_llm_tokens

    # shapes and dtypes
    assert r.tokens.shape == (N, C) and r.tokens.dtype == torch.float32
    assert r.kind.shape == (N,) and r.kind.dtype == torch.uint8
    assert r.pos.shape == (N, 3) and r.pos.dtype == torch.int32
    assert r.indptr.shape == (N + 1,) and r.indptr.dtype == torch.int64
    assert r.src.dtype == torch.int64 and r.weight.dtype == torch.float32
    assert r.src.shape == r.weight.shape
    assert r.n_input_tokens == T * H * W
    assert r.n_visual() == int((r.kind == KIND_VISUAL).sum()) >= T

    # base grid
    assert r.base in ("native", "pooled")
    Tb, Hb, Wb = r.base_grid
    if r.base == "pooled":
        assert r.base_grid == (T, math.ceil(H / 2), math.ceil(W / 2))
    else:
        assert r.base_grid == (T, H, W)

    # exactly one newline, and it is last
    assert set(r.kind.unique().tolist()) <= {KIND_VISUAL, KIND_MARKER, KIND_NEWLINE}
    assert int((r.kind == KIND_NEWLINE).sum()) == 1 and r.kind[-1] == KIND_NEWLINE
    assert r.pos[-1].tolist() == [Tb - 1, Hb - 1, Wb - 1]

    # positions in range; markers close a row
    assert (r.pos >= 0).all()
    assert (r.pos < torch.tensor([Tb, Hb, Wb], dtype=torch.int32)).all()
    markers = (r.kind == KIND_MARKER).nonzero().squeeze(1)
    assert (r.pos[markers, 2] == Wb - 1).all()

    # CSR: monotone, in range, markers/newline empty, visual rows non-empty with weights summing to 1
    counts = r.indptr[1:] - r.indptr[:-1]
    assert r.indptr[0] == 0 and (counts >= 0).all() and r.indptr[-1] == r.src.numel()
    assert (r.src >= 0).all() and (r.src < Tb * Hb * Wb).all()
    visual = r.kind == KIND_VISUAL
    assert (counts[~visual] == 0).all() and (counts[visual] > 0).all()
    assert torch.isfinite(r.weight).all()
    sums = torch.zeros(N).index_add_(0, row_of_entries(r), r.weight)
    torch.testing.assert_close(sums[visual], torch.ones(int(visual.sum())), atol=1e-5, rtol=0)

    # pos of a visual token = its largest-weight source, ties to the first (checked with a plain loop)
    for n in visual.nonzero().squeeze(1).tolist():
        s, w = r.src[r.indptr[n] : r.indptr[n + 1]], r.weight[r.indptr[n] : r.indptr[n + 1]]
        best = int(s[(w == w.max()).nonzero()[0, 0]])
        assert r.pos[n].tolist() == [best // (Hb * Wb), (best // Wb) % Hb, best % Wb]

    # output order: frame by frame, rows in order, each marker right after its row
    th = r.pos[:-1, 0].long() * Hb + r.pos[:-1, 1].long()
    assert (th[1:] >= th[:-1]).all()
    for m in markers.tolist():
        assert r.kind[m - 1] == KIND_VISUAL and th[m - 1] == th[m]
        assert m + 1 == N - 1 or th[m + 1] == th[m] + 1

    # the plan applied to the base-grid input reproduces the tokens; markers/newline get `newline`
    newline = torch.randn(C)
    out = r.apply(base_features(r, x, grid), newline)
    torch.testing.assert_close(out[visual], r.tokens[visual], atol=1e-5, rtol=1e-5)
    assert (out[~visual] == newline).all() and (r.tokens[~visual] == 0).all()

    # deterministic; storage round trip
    again = reduce(name, params, x, grid)
    assert all(torch.equal(a, b) for a, b in zip(fields(r), fields(again), strict=True))
    back = Reduction.from_arrays(r.to_arrays(), r.base, r.base_grid, r.n_input_tokens)
    assert all(torch.equal(a, b) for a, b in zip(fields(r), fields(back), strict=True))
    assert (back.base, back.base_grid, back.n_input_tokens) == (r.base, r.base_grid, r.n_input_tokens)


@pytest.mark.parametrize("cfg", CONFIGS, ids=[ids(c) for c in CONFIGS])
def test_float16_input_is_computed_in_float32(cfg):
    name, params = cfg
    x16 = smooth_video(3, 27, 27, 8, seed=7, dtype=torch.float16)
    r16 = reduce(name, params, x16, (27, 27))
    r32 = reduce(name, params, x16.float(), (27, 27))
    assert r16.tokens.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(fields(r16), fields(r32), strict=True))
    # apply keeps the dtype of the tokens it is given (e.g. bf16 projected features)
    out = r16.apply(base_features(r16, x16, (27, 27)).half(), torch.zeros(8, dtype=torch.float16))
    assert out.dtype == torch.float16 and out.shape == (r16.n_llm_tokens, 8)


@pytest.mark.parametrize("name", list(list_reducers()))
def test_bad_input_is_refused(name):
    r = get_reducer(name)
    with pytest.raises(ValueError, match="no frames"):
        r(torch.zeros(0, 25, 4), (5, 5))
    with pytest.raises(ValueError, match="shape"):
        r(torch.zeros(2, 24, 4), (5, 5))


# --------------------------------------------------------------------------------------------------
# base helpers


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [((27, 27), (14, 14)), ((5, 7), (3, 4)), ((27, 27), (9, 9)), ((6, 4), (3, 2)), ((3, 4), (7, 9))],
)
def test_interp_matrix_bilinear_matches_f_interpolate(in_hw, out_hw):
    x = torch.randn(2, 3, *in_hw, dtype=torch.float64)
    ref = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False)
    m = interp_matrix(in_hw, out_hw).double()
    got = (m @ x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(ref.shape)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)  # float32 weights


@pytest.mark.parametrize(
    "in_hw,stride", [((27, 27), 2), ((5, 7), 3), ((27, 27), 4), ((3, 3), 2), ((2, 5), 4)]
)
def test_interp_matrix_avg_matches_avg_pool2d(in_hw, stride):
    x = torch.randn(2, 3, *in_hw, dtype=torch.float64)
    ref = F.avg_pool2d(x, kernel_size=stride, stride=stride, ceil_mode=True)
    m = interp_matrix(in_hw, ref.shape[-2:], "avg", stride=stride).double()
    got = (m @ x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(ref.shape)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_llava_pool_is_transformers_apply_pooling():
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

    fake = SimpleNamespace(
        config=SimpleNamespace(vision_config=SimpleNamespace(image_size=384, patch_size=14))
    )
    x = torch.randn(3, 729, 10)
    pooled, hw = llava_pool(x, (27, 27))
    assert hw == (14, 14)
    assert torch.equal(pooled, LlavaOnevisionModel.apply_pooling(fake, x))


# --------------------------------------------------------------------------------------------------
# none


def test_none_is_stock_llava_onevision():
    x = torch.randn(32, 729, 4)
    r = get_reducer("none")(x, (27, 27))
    assert r.n_llm_tokens == 6273 and r.n_visual() == 6272 and r.base == "pooled"
    assert torch.equal(r.tokens[:-1], llava_pool(x, (27, 27))[0].reshape(-1, 4))
    assert torch.equal(r.src, torch.arange(6272)) and (r.weight == 1).all()


# --------------------------------------------------------------------------------------------------
# pool


def test_pool_stride2_on_projected_tokens_is_llava_onevision_pooling():
    """The plan built from SigLIP features, applied to *projected* native tokens, is LLaVA-OV's video path."""
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

    torch.manual_seed(0)
    T, C, D = 3, 12, 16
    x = torch.randn(T, 729, C)
    proj = torch.nn.Sequential(torch.nn.Linear(C, D), torch.nn.GELU(), torch.nn.Linear(D, D))
    newline = torch.randn(D)
    r = get_reducer("pool", stride=2)(x, (27, 27))
    assert r.n_llm_tokens == T * 196 + 1 and r.base == "native"
    with torch.no_grad():
        p = proj(x)  # [T, 729, D]
        got = r.apply(p.reshape(-1, D), newline)
        # transformers' own pooling + the newline appended once, as get_video_features does
        fake = SimpleNamespace(
            config=SimpleNamespace(vision_config=SimpleNamespace(image_size=378, patch_size=14))
        )
        ref = torch.cat((LlavaOnevisionModel.apply_pooling(fake, p).reshape(-1, D), newline[None]))
        direct = F.interpolate(p.reshape(T, 27, 27, D).permute(0, 3, 1, 2), size=(14, 14), mode="bilinear")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[:-1], direct.permute(0, 2, 3, 1).reshape(-1, D), atol=1e-5, rtol=1e-5)
    # and on SigLIP features the tokens are llava_pool itself
    torch.testing.assert_close(r.tokens[:-1], llava_pool(x, (27, 27))[0].reshape(-1, C), atol=1e-6, rtol=0)


def test_pool_stride3_bilinear():
    x = torch.randn(2, 729, 5)
    r = get_reducer("pool", stride=3)(x, (27, 27))
    assert r.n_llm_tokens == 2 * 81 + 1
    ref = F.interpolate(x.reshape(2, 27, 27, 5).permute(0, 3, 1, 2), size=(9, 9), mode="bilinear")
    assert torch.equal(r.tokens[:-1], ref.permute(0, 2, 3, 1).reshape(-1, 5))
    # 27/9 = 3 exactly: each output samples the centre pixel of its 3x3 cell, one source with weight 1
    assert r.src.numel() == 2 * 81 and (r.weight == 1).all()
    assert r.pos[:9, 2].tolist() == [1, 4, 7, 10, 13, 16, 19, 22, 25]


def test_pool_avg_partial_border_windows_by_hand():
    """3x3 -> 2x2, stride 2, ceil_mode: a border window averages only the pixels it covers."""
    x = torch.arange(9, dtype=torch.float32).reshape(1, 9, 1) ** 2  # pixel p has value p^2
    r = get_reducer("pool", stride=2, mode="avg")(x, (3, 3))
    assert r.n_llm_tokens == 5
    plan = [
        (r.src[r.indptr[n] : r.indptr[n + 1]].tolist(), r.weight[r.indptr[n] : r.indptr[n + 1]].tolist())
        for n in range(5)
    ]
    assert plan == [
        ([0, 1, 3, 4], [0.25] * 4),
        ([2, 5], [0.5, 0.5]),
        ([6, 7], [0.5, 0.5]),
        ([8], [1.0]),
        ([], []),
    ]
    expected = [(0 + 1 + 9 + 16) / 4, (4 + 25) / 2, (36 + 49) / 2, 64.0, 0.0]
    assert r.tokens[:, 0].tolist() == expected
    ref = F.avg_pool2d(x.reshape(1, 1, 3, 3), 2, 2, ceil_mode=True).flatten().tolist()
    assert ref == expected[:4]
    assert r.pos[:4].tolist() == [[0, 0, 0], [0, 0, 2], [0, 2, 0], [0, 2, 2]]


@pytest.mark.parametrize("mode", ["bilinear", "avg"])
def test_pool_stride1_is_identity(mode):
    x = torch.randn(3, 35, 4)
    r = get_reducer("pool", stride=1, mode=mode)(x, (5, 7))
    assert r.n_llm_tokens == 106
    assert torch.equal(r.tokens[:-1], x.reshape(-1, 4))
    assert torch.equal(r.src, torch.arange(105)) and (r.weight == 1).all()


# --------------------------------------------------------------------------------------------------
# dyntok


def row_with_similarities(sims, norms, C=4):
    """Vectors v_0..v_n with cos(v_{k-1}, v_k) = sims[k-1]: unit vectors at cumulative angles, scaled."""
    angles = torch.cat((torch.zeros(1), torch.tensor(sims, dtype=torch.float64).acos().cumsum(0)))
    v = torch.zeros(len(angles), C, dtype=torch.float64)
    v[:, 0], v[:, 1] = angles.cos(), angles.sin()
    return (v * torch.tensor(norms, dtype=torch.float64)[:, None]).float()


def test_dyntok_hand_built_rows():
    sims = [0.9, 0.1, 0.95, 0.3, 0.7]
    norms = [1.0, 3.0, 0.5, 2.0, 1.5, 4.0]  # different norms: groups average raw features, not directions
    row0 = row_with_similarities(sims, norms)
    row1 = torch.tensor([1.0, -2.0, 0.5, 0.0]).repeat(6, 1) * torch.tensor(norms)[:, None]  # one direction
    x = torch.cat((row0, row1))[None]  # [1, 12, 4], grid 2x6
    r = DynTok(threshold=0.6, grid="native")(x, (2, 6))

    # row 0: 0.9 > .6 joins, 0.1 new, 0.95 joins, 0.3 new, 0.7 joins -> {0,1} {2,3} {4,5}; row 1: one group
    assert r.kind.tolist() == [0, 0, 0, 1, 0, 1, 2]
    assert r.n_llm_tokens == 7 and r.n_visual() == 4
    assert r.indptr.tolist() == [0, 2, 4, 6, 6, 12, 12, 12]
    assert r.src.tolist() == list(range(12))
    torch.testing.assert_close(r.weight, torch.tensor([0.5] * 6 + [1 / 6] * 6))
    expect = torch.stack((row0[0:2].mean(0), row0[2:4].mean(0), row0[4:6].mean(0), row1.mean(0)))
    torch.testing.assert_close(r.tokens[[0, 1, 2, 4]], expect)
    assert r.pos.tolist() == [[0, 0, 0], [0, 0, 2], [0, 0, 4], [0, 0, 5], [0, 1, 0], [0, 1, 5], [0, 1, 5]]

    # at 0.8 the 0.7 link breaks: {0,1} {2,3} {4} {5}; at 0.92 the 0.9 one too
    assert DynTok(threshold=0.8, grid="native")(x, (2, 6)).kind.tolist() == [0, 0, 0, 0, 1, 0, 1, 2]
    r92 = DynTok(threshold=0.92, grid="native", marker=False)(x, (2, 6))
    assert r92.indptr.tolist() == [0, 1, 2, 4, 5, 6, 12, 12]


def dyntok_reference(feats, threshold):
    """The paper's loop, literally: [T, Hb, Wb, C] -> list of groups (lists of flat indices)."""
    T, Hb, Wb, _ = feats.shape
    groups = []
    for t in range(T):
        for h in range(Hb):
            group = [(t * Hb + h) * Wb]
            for k in range(1, Wb):
                s = F.cosine_similarity(feats[t, h, k - 1], feats[t, h, k], dim=0)
                if s > threshold:
                    group.append(group[-1] + 1)
                else:
                    groups.append(group)
                    group = [group[-1] + 1]
            groups.append(group)
    return groups


@pytest.mark.parametrize("grid_kind", ["pooled", "native"])
@pytest.mark.parametrize("threshold", [0.2, 0.6, 0.9])
def test_dyntok_matches_loop_reference(grid_kind, threshold):
    T, H, W, C, D = 2, 9, 11, 8, 5
    x = smooth_video(T, H, W, C, seed=3)
    r = DynTok(threshold=threshold, grid=grid_kind)(x, (H, W))
    feats, (hb, wb) = llava_pool(x, (H, W)) if grid_kind == "pooled" else (x, (H, W))
    groups = dyntok_reference(feats.reshape(T, hb, wb, C), threshold)
    visual = r.kind == KIND_VISUAL
    got = [r.src[r.indptr[n] : r.indptr[n + 1]].tolist() for n in visual.nonzero().squeeze(1).tolist()]
    assert got == groups
    assert 1 < len(groups) < T * hb * wb  # the input really exercises both merging and splitting
    # on other per-token features (e.g. projected, D != C) the plan averages each group
    proj = torch.randn(T * hb * wb, D)
    ref = torch.stack([proj[g].mean(0) for g in groups])
    torch.testing.assert_close(r.apply(proj, torch.zeros(D))[visual], ref)


def test_dyntok_threshold_extremes():
    T, H, W = 3, 27, 27
    x = smooth_video(T, H, W, 8, seed=5)
    hb = wb = 14
    never = DynTok(threshold=2.0)(x, (H, W))  # cos never exceeds 2: nothing merges
    assert never.n_llm_tokens == T * hb * wb + T * hb + 1
    torch.testing.assert_close(
        never.tokens[never.kind == KIND_VISUAL], llava_pool(x, (H, W))[0].reshape(-1, 8)
    )
    always = DynTok(threshold=-1.0)(x, (H, W))  # every s > -1: one group per row
    assert always.n_llm_tokens == 2 * T * hb + 1
    assert always.kind[:-1].tolist() == [KIND_VISUAL, KIND_MARKER] * (T * hb)
    rows = llava_pool(x, (H, W))[0].reshape(T * hb, wb, 8).mean(1)
    torch.testing.assert_close(always.tokens[always.kind == KIND_VISUAL], rows)


def test_dyntok_marker_false_removes_exactly_the_markers():
    x = smooth_video(3, 27, 27, 8, seed=9)
    with_m, without = DynTok(marker=True)(x, (27, 27)), DynTok(marker=False)(x, (27, 27))
    keep = with_m.kind != KIND_MARKER
    assert without.n_llm_tokens == with_m.n_llm_tokens - 3 * 14
    assert (without.kind != KIND_MARKER).all()
    for a, b in [(with_m.tokens, without.tokens), (with_m.kind, without.kind), (with_m.pos, without.pos)]:
        assert torch.equal(a[keep], b)
    assert torch.equal(with_m.src, without.src) and torch.equal(with_m.weight, without.weight)
    counts_m, counts = with_m.indptr.diff(), without.indptr.diff()
    assert torch.equal(counts_m[keep], counts)


def test_dyntok_higher_threshold_never_fewer_tokens():
    x = smooth_video(4, 27, 27, 16, seed=11)
    counts = [DynTok(threshold=t)(x, (27, 27)).n_llm_tokens for t in torch.linspace(-1, 1, 21).tolist()]
    assert all(b >= a for a, b in zip(counts, counts[1:], strict=False))
    assert counts[0] < counts[-1]  # and the sweep really moves


# --------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_errors():
    assert {"dyntok", "none", "pool"} <= set(list_reducers())
    valid = ", ".join(sorted(list_reducers()))
    with pytest.raises(ValueError) as e:
        get_reducer("x")
    assert str(e.value) == f"unknown method 'x'; valid: {valid}"
    with pytest.raises(ValueError) as e:
        get_reducer("pool", y=1)
    assert str(e.value) == "unknown parameter 'y' for pool; valid: mode, stride"
    assert isinstance(e.value, VtcError)  # the CLI prints it as one line


def test_registry_converts_cli_strings():
    assert get_reducer("dyntok", threshold="0.5", marker="false") == DynTok(threshold=0.5, marker=False)
    for s, b in [("true", True), ("1", True), ("Yes", True), ("no", False), ("0", False), ("FALSE", False)]:
        assert get_reducer("dyntok", marker=s).marker is b
    assert get_reducer("pool", stride="3", mode="avg").stride == 3
    assert get_reducer("dyntok", threshold=1).threshold == 1.0
    for key, bad in [("marker", "maybe"), ("threshold", "high"), ("grid", "hex")]:
        with pytest.raises(ValueError) as e:
            get_reducer("dyntok", **{key: bad})
        msg = str(e.value)
        assert "\n" not in msg and key in msg and repr(bad) in msg
    for bad in ["2.5", "0", "true"]:
        with pytest.raises(ValueError):
            get_reducer("pool", stride=bad)
    with pytest.raises(ValueError, match="valid: avg, bilinear"):
        get_reducer("pool", mode="max")


@pytest.mark.parametrize("cfg", CONFIGS, ids=[ids(c) for c in CONFIGS])
def test_reducer_config_round_trips(cfg):
    name, params = cfg
    r = get_reducer(name, **params)
    conf = json.loads(json.dumps(reducer_config(r)))
    assert conf["method"] == name and {k: conf[k] for k in params} == params
    assert get_reducer(conf.pop("method"), **{k: str(v) for k, v in conf.items()}) == r


@pytest.mark.parametrize("name", [n for n, c in list_reducers().items() if c.info.budget])
@pytest.mark.parametrize("T,grid", [(3, (5, 7)), (2, (27, 27))])
def test_budget_is_exact_and_saturates_at_the_input(name, T, grid):
    x = smooth_video(T, *grid, 6, seed=11)
    base = reduce(name, {"budget": str(10**6)}, x, grid)  # budget >= input: nothing to cut
    n_base = base.base_grid[0] * base.base_grid[1] * base.base_grid[2]
    assert base.n_visual() <= n_base
    for m in (T, T + 1, 2 * T + 3):
        r = reduce(name, {"budget": str(m)}, x, grid)
        assert r.n_visual() == min(m, base.n_visual()), (name, m)
        assert r.n_llm_tokens == r.n_visual() + 1


def test_optional_int_parameters_from_cli_strings():
    assert get_reducer("tome", budget="none").budget is None
    assert get_reducer("tome", budget="12").budget == 12
    assert get_reducer("vqtoken", k="NULL").k is None
    with pytest.raises(ValueError, match="bad value 'x' for tome.budget"):
        get_reducer("tome", budget="x")
