"""Qwen2.5-VL's vision side (vtc.encoders.qwen2_5_vl) against transformers' own processor and model, on a
tiny random Qwen2.5-VL loaded through from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtc.encoders.qwen2_5_vl import QwenPreprocess, QwenVisionTower, smart_resize
from vtc.errors import VtcError


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    from vtc.encoders.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen") / "tiny-qwen2.5-vl")


def frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("hw", [(240, 320), (480, 854), (1080, 1920), (64, 64), (28, 4000), (3000, 2000)])
def test_smart_resize_is_the_processors(hw):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf

    lo, hi = 128 * 28 * 28, 768 * 28 * 28  # the video processor's limits
    assert smart_resize(*hw) == hf(*hw, factor=28, min_pixels=lo, max_pixels=hi)
    h, w = smart_resize(*hw)
    assert h % 28 == 0 and w % 28 == 0 and lo <= h * w <= hi


def test_one_frame_pair_equals_the_processors_pixels():
    """A still image is a temporal patch of two equal frames: the PIL image processor's rows then are the
    video rows of that image twice (same resize, rescale, normalisation and patch order)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    pre = QwenPreprocess()
    img = frames(1, 200, 300, seed=1)
    hf = Qwen2VLImageProcessorPil(min_pixels=pre.min_pixels, max_pixels=pre.max_pixels)(
        images=[img[0]], return_tensors="pt"
    )
    resized = pre.resize(img)
    assert resized.shape[1:3] == pre.size(200, 300)
    pixels, thw = pre(np.concatenate([resized, resized]))
    assert thw.tolist() == hf["image_grid_thw"][0].tolist()
    torch.testing.assert_close(pixels, hf["pixel_values"].float(), atol=2e-6, rtol=0)


def test_an_odd_frame_count_repeats_the_last_frame():
    pre = QwenPreprocess()
    f = frames(3, 56, 84)
    a, thw = pre(f)
    b, _ = pre(np.concatenate([f, f[-1:]]))
    assert thw.tolist() == [2, 4, 6] and torch.equal(a, b)


def test_tower_tokens_are_the_models_features_on_its_grid(tiny_qwen):
    """A still image, as a pair of equal frames, gives exactly the model's image features from transformers'
    own processor (resize, normalisation, patch order, window attention, merger), one per merged cell."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tower = QwenVisionTower(str(tiny_qwen))
    pre = tower.preprocess
    img = frames(1, 90, 160, seed=2)
    hf = Qwen2VLImageProcessorPil(min_pixels=pre.min_pixels, max_pixels=pre.max_pixels)(
        images=[img[0]], return_tensors="pt"
    )
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen).eval()
    with torch.inference_mode():
        ref = model.model.get_image_features(hf["pixel_values"], hf["image_grid_thw"]).pooler_output[0]
    r = pre.resize(img)
    feats = tower.encode(np.concatenate([r, r]))
    h, w = tower.video_grid(r.shape)
    H, W = r.shape[1:3]
    assert (h, w) == (H // 28, W // 28) and feats.shape == (1, h * w, tower.dim)
    assert h * w > 16  # several 112-pixel attention windows
    torch.testing.assert_close(feats[0], ref, atol=1e-5, rtol=1e-5)
    video = tower.encode(frames(5, 90, 160, seed=3))
    assert video.shape == (3, h * w, tower.dim)  # 5 frames: 3 temporal steps (the last frame repeated)


def test_other_models_are_refused_in_one_line(tiny_ckpt):
    with pytest.raises(VtcError, match="is a llava_onevision model, not Qwen2.5-VL"):
        QwenVisionTower(str(tiny_ckpt["llava_ov"]))


def test_extract_stores_the_merger_tokens_per_video(tiny_qwen, tmp_path):
    """vtc extract with a Qwen2.5-VL checkpoint: the merger's tokens of each video on its own grid, the
    resize policy and temporal patch in the store identity; --save-attention stores the last block's
    attention per merged cell."""
    from vtc.cache import Store
    from vtc.stages.demo import synth_video
    from vtc.stages.extract import ExtractOptions, extract
    from vtc.stages.info import store_info
    from vtc.video import SamplingPolicy, decode_video

    synth_video(tmp_path / "v.mp4", n_frames=8, seed=3)
    s = extract(
        ExtractOptions([str(tmp_path / "v.mp4")], tmp_path / "q.zarr", model=str(tiny_qwen), frames=5),
        quiet=True,
    )
    assert s.done == 1
    st = Store.open(tmp_path / "q.zarr")
    enc = st.meta["identity"]["encoder"]
    assert enc["source"] == "qwen2_5_vl" and enc["grid"] is None and enc["preprocess"]["temporal_patch"] == 2
    arrays, attrs = st.read("v")
    tower = QwenVisionTower(str(tiny_qwen))
    dec = decode_video(tmp_path / "v.mp4", SamplingPolicy(frames=5), size=None)
    ref = tower.encode(dec.frames)
    assert tuple(attrs["grid"]) == tower.video_grid(dec.frames.shape)
    assert arrays["features"].shape == (3, ref.shape[1], tower.dim) and len(arrays["frame_indices"][...]) == 5
    np.testing.assert_array_equal(arrays["features"][...], ref.numpy().astype(np.float16))
    assert store_info(tmp_path / "q.zarr")["summary"]["tokens per frame"] == "per video"

    extract(
        ExtractOptions([str(tmp_path / "v.mp4")], tmp_path / "a.zarr", model=str(tiny_qwen), frames=5,
                       save_attention=True),
        quiet=True,
    )  # fmt: skip
    att = Store.open(tmp_path / "a.zarr").read("v")[0]["attention"][...]
    assert att.shape == (3, ref.shape[1]) and np.allclose(att.sum(1), 1.0, atol=1e-4)


def test_received_attention_is_the_last_blocks_eager_weights_on_the_merged_grid(tiny_qwen):
    """--save-attention on Qwen2.5-VL: the weights transformers' own eager attention computes in the last
    block (captured from it), mean over heads and queries, summed per merged cell and put back in raster
    order with the order the merger's output is put back in."""
    import sys

    from transformers import Qwen2_5_VLForConditionalGeneration

    from vtc.encoders.qwen2_5_vl import window_order

    tower = QwenVisionTower(str(tiny_qwen))
    video = frames(4, 90, 160, seed=5)
    feats, scores = tower.encode(video, attention=True)
    T, n = scores.shape
    assert (T, n) == feats.shape[:2]
    torch.testing.assert_close(scores.sum(1), torch.ones(T), atol=1e-5, rtol=0)  # one distribution per step

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen, attn_implementation="eager").eval()
    visual = model.model.visual
    last = visual.blocks[-1].attn
    module = sys.modules[type(last).__module__]
    real, seen, hidden = module.eager_attention_forward, [], []

    def capture(mod, *a, **kw):
        out = real(mod, *a, **kw)
        if mod is last:
            seen.append(out[1][0].mean(dim=(0, 1)))  # [L] over the chunk's keys
        return out

    module.eager_attention_forward = capture
    h = visual.blocks[-1].register_forward_hook(lambda m, a, out: hidden.append(out))
    try:
        pixels, thw = tower.preprocess(tower.preprocess.resize(video))
        with torch.inference_mode():
            ref_out = visual(pixels, grid_thw=thw[None])
    finally:
        module.eager_attention_forward = real
        h.remove()
    order = torch.argsort(window_order(visual, thw))
    # the mapping back to raster order is the merger's: the last block's output merged, then reordered
    torch.testing.assert_close(visual.merger(hidden[0])[order], ref_out.pooler_output, atol=1e-6, rtol=0)
    ref = torch.cat(seen).reshape(-1, 4).sum(1)[order].reshape(T, -1)
    torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
