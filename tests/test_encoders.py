"""Vision towers: the stored layer is the one LLaVA-OV consumes; preprocessing; provenance; errors."""

import numpy as np
import pytest
import torch

from vtc.encoders.vision import Preprocess, VisionEncoder
from vtc.errors import VtcError


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(1).integers(0, 256, (3, 384, 384, 3), dtype=np.uint8)


def test_llava_ov_tower_gives_what_get_video_features_projects(tiny_ckpt, frames):
    from transformers import LlavaOnevisionForConditionalGeneration

    enc = VisionEncoder(str(tiny_ckpt["llava_ov"]))
    feats = enc.encode(frames, batch_size=2)
    assert feats.shape == (3, 729, 32) and enc.grid == (27, 27) and enc.layer == -1
    m = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_ckpt["llava_ov"]).eval()
    px = Preprocess()(frames)
    with torch.no_grad():
        ref = m.model.vision_tower(px, output_hidden_states=True).hidden_states[-1]
        # and the projected + pooled result equals the stock video path
        stock = m.model.get_video_features(px[None]).pooler_output[0, :-1]
        ours = m.model.apply_pooling(m.model.multi_modal_projector(feats)).reshape(-1, stock.shape[-1])
    torch.testing.assert_close(feats, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)


def test_bare_siglip_defaults_to_second_to_last_layer(tiny_ckpt, frames):
    from transformers import SiglipVisionModel

    enc = VisionEncoder(str(tiny_ckpt["siglip"]))
    assert enc.layer == -2 and enc.identity()["source"] == "siglip_vision_model"
    feats = enc.encode(frames)
    full = SiglipVisionModel.from_pretrained(tiny_ckpt["siglip"]).eval()
    with torch.no_grad():
        ref = full(pixel_values=Preprocess()(frames), output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(feats, ref, rtol=0, atol=1e-6)
    assert not torch.allclose(
        feats, full(pixel_values=Preprocess()(frames), output_hidden_states=True).hidden_states[-1]
    )


def test_preprocess_is_llava_ov_normalisation():
    x = np.array([[[[0, 255, 51]]]], dtype=np.uint8)
    out = Preprocess(size=(1, 1))(x)
    torch.testing.assert_close(out.flatten(), torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))


def test_errors(tiny_ckpt, tmp_path):
    with pytest.raises(VtcError, match="cannot load model config"):
        VisionEncoder(str(tmp_path / "none"))
    with pytest.raises(VtcError, match="unknown dtype 'fp8'"):
        VisionEncoder(str(tiny_ckpt["siglip"]), dtype="fp8")
    with pytest.raises(VtcError, match="layer 7 does not exist in a 2-layer tower"):
        VisionEncoder(str(tiny_ckpt["siglip"]), layer=7).load()
    text_only = tmp_path / "qwen"
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(text_only)
    with pytest.raises(VtcError, match="is a qwen2 model"):
        VisionEncoder(str(text_only))


def test_full_siglip_checkpoint_loads_its_vision_tower(tmp_path, frames):
    """google/siglip-so400m-patch14-384 is a SiglipModel (text + vision): the tower is taken from it."""
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig

    from vtc.encoders.tiny import tiny_vision_config

    torch.manual_seed(0)
    text = SiglipTextConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    full = SiglipModel(
        SiglipConfig(text_config=text.to_dict(), vision_config=tiny_vision_config().to_dict())
    ).eval()
    full.save_pretrained(tmp_path / "siglip-full")
    enc = VisionEncoder(str(tmp_path / "siglip-full"))
    assert enc.identity()["source"] == "siglip" and enc.layer == -2
    with torch.no_grad():
        ref = full.vision_model(pixel_values=Preprocess()(frames), output_hidden_states=True).hidden_states[
            -2
        ]
    torch.testing.assert_close(enc.encode(frames), ref, rtol=0, atol=1e-6)
