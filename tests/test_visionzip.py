"""VisionZip: dominant tokens by stored attention, contextual merges; --save-attention end to end."""

import numpy as np
import pytest
import torch

from vtc.cache import Store
from vtc.errors import VtcError
from vtc.reducers import get_reducer
from vtc.stages.compress import CompressOptions, compress
from vtc.stages.demo import synth_video
from vtc.stages.extract import ExtractOptions, extract


def test_dominant_are_the_most_attended_and_context_groups_by_hand():
    # one frame, 2x4 grid; tokens 5 and 2 get the most attention
    attn = torch.tensor([[0.05, 0.1, 0.3, 0.05, 0.05, 0.35, 0.05, 0.05]])
    x = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1], [1, 0.1], [5, 5], [0.1, 1], [1, 0]])[None]
    r = get_reducer("visionzip", dominant=2, contextual=2)(x, (2, 4), attention=attn)
    assert r.n_visual() == 4
    groups = [sorted(r.src[r.indptr[n] : r.indptr[n + 1]].tolist()) for n in range(4)]
    # remaining tokens (raster) 0,1,3,4,6,7 -> centres every 3rd: 0 = (1, 0) and 4 = (1, 0.1);
    # 1 and 7 equal (1, 0): cosine 1 with centre 0; 3 = (0, 1) and 6 = (0.1, 1) are closer to centre 4
    assert groups == [[0, 1, 7], [2], [3, 4, 6], [5]]
    torch.testing.assert_close(r.tokens[0], x[0, [0, 1, 7]].mean(0))
    torch.testing.assert_close(r.tokens[1], x[0, 2])


def test_budget_is_exact_and_split_54_10():
    x = torch.randn(3, 729, 8)
    attn = torch.rand(3, 729)
    for budget in (64 * 3, 100, 7):
        r = get_reducer("visionzip", budget=budget)(x, (27, 27), attention=attn)
        assert r.n_visual() == budget
    r = get_reducer("visionzip", budget=192)(x, (27, 27), attention=attn)
    top = attn.argsort(dim=1, descending=True)[:, :54]
    singles = {int(r.src[r.indptr[n]]) for n in range(r.n_visual()) if r.indptr[n + 1] - r.indptr[n] == 1}
    assert {int(t * 729 + i) for t in range(3) for i in top[t]} <= singles


def test_missing_attention_is_a_clear_error():
    with pytest.raises(VtcError, match="--save-attention"):
        get_reducer("visionzip")(torch.randn(1, 4, 2), (2, 2))


def test_save_attention_then_visionzip(tiny_ckpt, tmp_path):
    synth_video(tmp_path / "v.mp4", n_frames=8, seed=3)
    kw = {"model": str(tiny_ckpt["siglip"]), "frames": 2}
    extract(ExtractOptions([str(tmp_path / "v.mp4")], tmp_path / "plain.zarr", **kw), quiet=True)
    with pytest.raises(VtcError, match="needs 'attention'"):
        compress(CompressOptions(tmp_path / "plain.zarr", "visionzip", out=tmp_path / "vz0.zarr"), quiet=True)
    extract(
        ExtractOptions([str(tmp_path / "v.mp4")], tmp_path / "att.zarr", save_attention=True, **kw),
        quiet=True,
    )
    arrays, _ = Store.open(tmp_path / "att.zarr").read("v")
    att = arrays["attention"][...]
    assert att.shape == (2, 729) and np.allclose(att.sum(1), 1.0, atol=1e-4)
    with pytest.raises(VtcError, match="different provenance"):
        extract(ExtractOptions([str(tmp_path / "v.mp4")], tmp_path / "att.zarr", **kw), quiet=True)
    s = compress(CompressOptions(tmp_path / "att.zarr", "visionzip", out=tmp_path / "vz.zarr"), quiet=True)
    assert s.llm_tokens == 2 * 64 + 1
    # a parameter decides whether fastvid and prumerge+ read the stored attention: compress loads it then
    for method, mode in (("fastvid", {"saliency": "attention"}), ("prumerge+", {"score": "attention"})):
        assert get_reducer(method).needs == () and get_reducer(method, **mode).needs == ("attention",)
        with pytest.raises(VtcError, match="needs 'attention'"):
            compress(
                CompressOptions(tmp_path / "plain.zarr", method, mode, out=tmp_path / "x.zarr"), quiet=True
            )
        s = compress(CompressOptions(tmp_path / "att.zarr", method, mode), quiet=True)
        assert s.done == 1 and s.llm_tokens > 2
