"""`vtc info`: store summaries, token accounting against stock LLaVA-OV, histograms."""

from vtc.stages.compress import compress
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
    tok = compress(feature_store, "pool", {"stride": "3"}, out=tmp_path / "p3.zarr", quiet=True).out
    t = store_info(tok)
    # 4 + 3 frames of 9x9 plus one newline each, against stock 196/frame + 1
    assert t["summary"]["LLM tokens"] == 7 * 81 + 2
    assert t["summary"]["retained (of stock LLaVA-OV tokens)"] == f"{100 * (7 * 81 + 2) / (7 * 196 + 2):.2f}%"
    assert t["summary"]["LLM tokens per video (min/mean/max)"] == "244 / 284.5 / 325"
    assert "reduce time per video (median)" in t["summary"]
