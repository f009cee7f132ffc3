"""`vtc info`: store summaries, token accounting against stock LLaVA-OV, histograms."""

from vtc.stages.compress import CompressOptions, compress
from vtc.stages.info import histogram, store_info


def test_histogram_by_hand():
    h = histogram([0, 1, 2, 8], bins=4)
    assert [b["count"] for b in h] == [2, 1, 0, 1]
    assert (h[0]["lo"], h[-1]["hi"]) == (0, 8)
    assert histogram([5, 5, 5]) == [{"lo": 5, "hi": 5, "count": 3}]
    assert histogram([]) == []


def test_info_of_feature_and_token_stores(feature_store, tmp_path):
    f = store_info(feature_store)
    assert f["kind"] == "features" and f["summary"]["videos done"] == 2 and f["summary"]["frames"] == 7
    assert f["summary"]["tokens per frame"] == 729
    assert sum(b["count"] for b in f["histogram"]) == 2
    tok = compress(
        CompressOptions(feature_store, "pool", {"stride": "3"}, out=tmp_path / "p3.zarr"), quiet=True
    ).out
    t = store_info(tok)
    # 4 + 3 frames of 9x9 plus one newline each, against stock 196/frame + 1
    assert t["summary"]["LLM tokens"] == 7 * 81 + 2
    assert t["summary"]["retained (of stock tokens)"] == f"{100 * (7 * 81 + 2) / (7 * 196 + 2):.2f}%"
    assert t["summary"]["LLM tokens per video (min/mean/max)"] == "244 / 284.5 / 325"
    assert "reduce time per video (median)" in t["summary"]


def test_module_flops_by_hand():
    import torch

    from vtc.reducers import get_reducer
    from vtc.reducers.flops import module_flops

    x = torch.randn(2, 16, 3)  # 2 frames of 4x4, C = 3
    red = get_reducer("dyntok", grid="native")(x, (4, 4))
    f = module_flops("dyntok", get_reducer("dyntok", grid="native"), red, 3)
    # cosines: 2 frames x 4 rows x 3 adjacent pairs dot products + 32 norms, 2*C flops each
    assert f["decision"] == 2 * 3 * (2 * 4 * 3 + 32) and f["pool"] == 0
    assert f["plan"] == 2 * 32 * 3  # every input token is in exactly one group
    red = get_reducer("tome", budget=8, grid="native")(x, (4, 4))
    f = module_flops("tome", get_reducer("tome", budget=8, grid="native"), red, 3)
    # per frame 16 -> 4: round 1 |A|=|B|=8 merges 8 (16 -> 8); round 2 |A|=|B|=4 merges 4 (8 -> 4)
    assert f["decision"] == 2 * (2 * 3 * (8 * 8 + 16) + 2 * 3 * (4 * 4 + 8))
    none = get_reducer("none")
    assert module_flops("none", none, none(x, (4, 4)), 3)["decision"] == 0


def test_info_reports_module_flops(feature_store, tmp_path):
    tok = compress(CompressOptions(feature_store, "dyntok", out=tmp_path / "d.zarr"), quiet=True).out
    assert float(store_info(tok)["summary"]["module FLOPs per video (mean, analytic)"]) > 0


def test_every_method_has_a_flops_formula():
    """`vtc compress` records each video's module FLOPs: a method without a formula would fail there."""
    import torch

    from vtc.reducers import get_reducer, list_reducers
    from vtc.reducers.flops import module_flops

    x = torch.randn(2, 36, 8)
    attention = torch.softmax(torch.randn(2, 36), dim=-1)
    for name in list_reducers():
        r = get_reducer(name)
        red = r(x, (6, 6), attention=attention) if "attention" in r.needs else r(x, (6, 6))
        f = module_flops(name, r, red, 8)
        assert f["total"] == f["decision"] + f["pool"] + f["plan"] and f["plan"] > 0, name
    # by hand: divprune on 2 frames of 3x3 pooled (n = 18): an 18 x 18 Gram matrix and 18 norms
    red = get_reducer("divprune")(x, (6, 6))
    assert module_flops("divprune", get_reducer("divprune"), red, 8)["decision"] == 2 * 8 * (18 * 18 + 18)
