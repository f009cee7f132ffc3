"""`pdrop` (PyramidDrop, arXiv 2410.17247) inside the LLM: one stage is FastV's masked variant token for
token; several stages shrink the visual tokens in use as a pyramid, each stage's set inside the last."""

from __future__ import annotations

import pytest
import torch

from tests.test_online import N_VIS, QUESTIONS, _sharpen, lives, runner, sharp_runner, video  # noqa: F401
from vtc.encoders.tiny import build_tiny_llava_ov
from vtc.errors import VtcError
from vtc.eval.llava import LlavaRunner
from vtc.eval.online import get_online, list_online, topk_sorted


@pytest.fixture(scope="module")
def deep_runner(tmp_path_factory):
    """The tiny LLaVA-OV with 4 LLM layers, so that three stage boundaries fit (1, 2, 3)."""
    path = build_tiny_llava_ov(tmp_path_factory.mktemp("deep") / "m", text={"num_hidden_layers": 4})
    return _sharpen(LlavaRunner(str(path)), 0.15)


def test_listed_with_its_defaults_and_bad_params_are_one_line():
    assert list_online()["pdrop"]["params"] == {"layers": "8,16,24", "ratio": 0.5}
    for params, match in (({"layers": "3,2"}, "increasing"), ({"layers": "a"}, "comma-separated"),
                          ({"ratio": "0"}, r"\(0, 1\]")):  # fmt: skip
        with pytest.raises(VtcError, match=match) as e:
            get_online("pdrop", **params)
        assert "\n" not in str(e.value)


def test_one_stage_is_fastv_masked(sharp_runner, video):  # noqa: F811
    feats, red = video
    for q in QUESTIONS:
        a = sharp_runner.run(
            feats,
            red,
            q,
            max_new_tokens=6,
            keep_logits=True,
            online=get_online("pdrop", layers="1", ratio=0.3),
        )
        b = sharp_runner.run(feats, red, q, max_new_tokens=6, keep_logits=True,
                       online=get_online("fastv", k=1, ratio=0.3, mask=True))  # fmt: skip
        assert a.token_ids == b.token_ids and torch.equal(a.logits, b.logits)
        assert a.visible_per_layer_prefill == b.visible_per_layer_prefill == [N_VIS, 118]


def test_three_stages_make_a_pyramid(deep_runner, video, lives):  # noqa: F811
    feats, red = video
    g = deep_runner.run(
        feats, red, QUESTIONS[0], max_new_tokens=4, online=get_online("pdrop", layers="1,2,3")
    )
    n1 = round(0.5 * N_VIS)
    n2 = round(0.5 * n1)
    n3 = round(0.5 * n2)
    assert g.visible_per_layer_prefill == [N_VIS, n1, n2, n3]
    assert all(row == [N_VIS, n1, n2, n3] for row in g.online_stats["visible_per_step"])  # decode too
    assert g.online_stats["kept_per_stage"] == [n1, n2, n3] and g.visual_decode == n3
    keeps = lives[-1].keeps
    for outer, inner in zip(keeps, keeps[1:], strict=False):  # each stage keeps a subset of the last
        assert set(inner.tolist()) < set(outer.tolist())
    with pytest.raises(VtcError, match="more than 4"):  # a boundary outside the LLM: one line
        deep_runner.run(feats, red, QUESTIONS[0], max_new_tokens=2, online=get_online("pdrop", layers="2,4"))


def test_each_stage_keeps_the_most_attended_of_the_last(deep_runner, video, lives):  # noqa: F811
    feats, red = video
    deep_runner.run(feats, red, QUESTIONS[1], max_new_tokens=2, online=get_online("pdrop", layers="1,3"))
    live = lives[-1]
    alive = torch.arange(N_VIS)
    for keep, scores in zip(live.keeps, live.scores, strict=True):
        assert torch.equal(keep, alive[topk_sorted(scores[alive], round(0.5 * alive.numel()))])
        dropped = alive[~torch.isin(alive, keep)]
        assert scores[keep].min() >= scores[dropped].max()  # the most attended of those still in use
        alive = keep
