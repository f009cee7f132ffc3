"""Token modules on a clustering reduction: vq-attn (paper Eq. 6-7 and the official module) and
cross-dynamics: sizes, shapes, token counts, what an untrained one does, refusals, training and loading."""

from __future__ import annotations

import pytest
import torch

from vtc.adapters import get_adapters
from vtc.adapters.cross_dynamics import _module as cross_dynamics_module
from vtc.adapters.vq_attn import _modules as vq_modules
from vtc.errors import VtcError
from vtc.reducers import get_reducer
from vtc.reducers.base import KIND_VISUAL

D = 16


def reduction(T=4, grid=(6, 6), k=5, method="vqtoken", seed=0):
    x = torch.randn(T, grid[0] * grid[1], 8, generator=torch.Generator().manual_seed(seed))
    return get_reducer(method, k=k, seed=0)(x, grid)


def tokens_of(red, seed=1):
    return torch.randn(red.n_llm_tokens, D, generator=torch.Generator().manual_seed(seed))


def build(name, red, **opts):
    (a,) = get_adapters(name, {name: opts})
    a.bind(red)
    return a, a.build(D).eval()


def test_official_vq_attn_has_the_official_size():
    _, official = vq_modules()
    # VQAttn(query_dim=729, context_dim=896, num_heads=8): Linear 729->896 + one decoder layer
    m = official(729, 896, 8)
    assert sum(p.numel() for p in m.to_q_proj.parameters()) == 654_080
    assert sum(p.numel() for p in m.decoder.parameters()) == 10_108_032
    assert sum(p.numel() for p in m.parameters()) == 10_762_112
    assert m.decoder.linear1.out_features == 2048 and not m.decoder.norm_first


def test_paper_and_cross_dynamics_sizes():
    paper, _ = vq_modules()
    cells, heads = 4 * 36, 4
    m = paper(cells, D, heads)
    mlp = cells * D + D + D * D + D
    mha = 3 * D * D + 3 * D + D * D + D  # W_Q, W_K, W_V and the output projection
    assert sum(p.numel() for p in m.parameters()) == mlp + mha
    c = cross_dynamics_module()(36, 64, D, heads)
    assert sum(p.numel() for p in c.parameters()) == 64 * D + 36 * D + 2 * 2 * D + mha


@pytest.mark.parametrize("name", ["vq-attn", "cross-dynamics"])
@pytest.mark.parametrize("method", ["vqtoken", "tokendynamics"])
def test_untrained_modules_pass_the_codebook_through(name, method):
    red = reduction(method=method)
    x = tokens_of(red)
    _, m = build(name, red, heads=4)
    with torch.no_grad():
        out = m(x, red)
    assert out.shape == x.shape  # K tokens and the newline: no token added
    assert torch.allclose(out, x, atol=1e-6)
    # a trained output projection changes every visual token, never the newline
    with torch.no_grad():
        m.attn.out_proj.weight.normal_()
        out = m(x, red)
    visual = red.kind == KIND_VISUAL
    assert not torch.isclose(out[visual], x[visual]).all(-1).any()
    assert torch.equal(out[~visual], x[~visual])


def test_paper_form_reads_each_clusters_footprint():
    red = reduction(k=3)
    _, m = build("vq-attn", red, heads=4)
    seen = []
    m.mlp.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        m(tokens_of(red), red)
    footprint = seen[0]  # [K, T*Hb*Wb]: row k is 1 where the index map holds k
    index = red.extras["index_map"].reshape(-1)
    assert footprint.shape == (3, index.numel())
    for k in range(3):
        assert torch.equal(footprint[k].bool(), index == k)
    assert footprint.sum() == index.numel()  # every cell in exactly one cluster


@pytest.mark.parametrize(("T", "k"), [(4, 9), (8, 3)])
def test_official_form_gives_max_t_k_tokens_cycling_the_shorter(T, k):
    red = reduction(T=T, k=k)
    x = tokens_of(red)
    _, m = build("vq-attn", red, form="official", heads=4)
    L = max(T, k)
    with torch.no_grad():
        out = m(x, red)
    assert out.shape == (L + 1, D)
    assert torch.equal(out[-1], x[-1])  # the newline follows
    # the same as the decoder layer called on the cycled queries and memory, as the official code does
    rows = red.extras["index_map"].reshape(T, -1).float()
    q = m.to_q_proj(rows[torch.arange(L) % T])
    mem = x[:-1][torch.arange(L) % k]
    with torch.no_grad():
        ref = m.decoder(q[:, None], mem[:, None])[:, 0]
    assert torch.allclose(out[:-1], ref, atol=1e-5)


def test_refusals_are_one_line():
    pooled = get_reducer("pool", stride=2)(torch.randn(2, 36, 8), (6, 6))
    for name in ("vq-attn", "cross-dynamics"):
        (a,) = get_adapters(name)
        with pytest.raises(VtcError, match="clustering reduction"):
            a.bind(pooled)
    with pytest.raises(VtcError, match="unknown vq-attn option 'nope'"):
        get_adapters("vq-attn", {"vq-attn": {"nope": "1"}})
    with pytest.raises(VtcError, match="form must be one of paper, official"):
        get_adapters("vq-attn", {"vq-attn": {"form": "x"}})
    red = reduction(T=4)
    _, m = build("vq-attn", red, heads=4)
    with pytest.raises(VtcError, match="trained on 144 grid cells"):
        m(tokens_of(reduction(T=2)), reduction(T=2))
    _, m = build("cross-dynamics", red, heads=4, frames=3)
    with pytest.raises(VtcError, match="at most 3 frames"):
        m(tokens_of(red), red)
    (a,) = get_adapters("vq-attn", {"vq-attn": {"heads": "5"}})
    a.bind(red)
    with pytest.raises(VtcError, match="does not divide"):
        a.build(D)


@pytest.fixture(scope="module")
def syn_vq(tmp_path_factory, tiny_ckpt):
    from vtc.stages.compress import CompressOptions, compress
    from vtc.stages.extract import ExtractOptions, extract
    from vtc.video.synthetic import make_synthetic_qa

    d = tmp_path_factory.mktemp("synvq")
    paths = make_synthetic_qa(d, n_train=6, n_test=3)
    model = str(tiny_ckpt["llava_ov"])
    assert (
        extract(
            ExtractOptions([str(paths["videos"])], d / "feats.zarr", model=model, frames=8), quiet=True
        ).done
        == 9
    )
    c = compress(CompressOptions(d / "feats.zarr", "vqtoken", {"k": "5"}, out=d / "vq.zarr"), quiet=True)
    p = compress(CompressOptions(d / "feats.zarr", "pool", {"stride": "3"}, out=d / "pool.zarr"), quiet=True)
    return {**paths, "model": model, "vq": c.out, "pool": p.out}


@pytest.mark.parametrize(
    ("adapter", "opts", "n_tokens"),
    [("vq-attn", {"heads": "4"}, 6), ("vq-attn", {"form": "official"}, 9), ("cross-dynamics", {}, 6)],
)
def test_token_adapters_train_load_and_count(syn_vq, tmp_path, adapter, opts, n_tokens):
    from vtc.stages.evaluate import EvalOptions, evaluate
    from vtc.stages.train import TrainOptions, train

    s = train(
        TrainOptions(data=str(syn_vq["train"]), model=syn_vq["model"], adapters=adapter, out=str(tmp_path / "run"),
                     adapter_options={adapter: opts}, tokens=str(syn_vq["vq"]), lr=1e-2, steps=4, warmup=0.25),
        quiet=True,
    )  # fmt: skip
    assert s.losses[-1] < s.losses[0]
    assert set(s.trainable) == {adapter}
    data = syn_vq["test"].parent
    base = evaluate(EvalOptions("mcq", syn_vq["vq"], syn_vq["model"], data=data, out=tmp_path / "e0"))
    tuned = evaluate(
        EvalOptions(
            "mcq", syn_vq["vq"], syn_vq["model"], data=data, out=tmp_path / "e1", adapter=tmp_path / "run"
        )
    )
    # vqtoken k=5: 5 visual tokens + the newline; the official form gives max(T=8, K=5) visual tokens
    assert {r["visual_tokens"] for r in base["samples"]} == {6}
    assert {r["visual_tokens"] for r in tuned["samples"]} == {n_tokens}
    assert tuned["visual_tokens"]["mean"] == n_tokens
    # another reduction (no index map) cannot take the module: one line
    with pytest.raises(VtcError, match="clustering reduction"):
        evaluate(
            EvalOptions(
                "mcq",
                syn_vq["pool"],
                syn_vq["model"],
                data=data,
                out=tmp_path / "e2",
                adapter=tmp_path / "run",
            )
        )


def test_a_module_trains_on_top_of_a_frozen_run(syn_vq, tmp_path):
    """`--init RUN`: RUN's weights load first and stay frozen; only the new module trains and is saved, and
    loading the new run brings RUN's weights back with it (and refuses once RUN is retrained or gone)."""
    import shutil

    from safetensors.torch import load_file

    from vtc.adapters import load_adapter
    from vtc.eval.llava import LlavaRunner
    from vtc.stages.train import TrainOptions, train

    def run(out, adapters, **kw):
        opt = TrainOptions(data=str(syn_vq["train"]), model=syn_vq["model"], adapters=adapters, out=str(out),
                           tokens=str(syn_vq["vq"]), lr=1e-2, steps=3, warmup=0.3, **kw)  # fmt: skip
        return train(opt, quiet=True)

    run(tmp_path / "base", "projector")
    s = run(tmp_path / "top", "vq-attn", init=str(tmp_path / "base"))
    assert set(s.trainable) == {"vq-attn"}
    base_w = load_file(str(tmp_path / "base" / "adapter.safetensors"))
    top_w = load_file(str(tmp_path / "top" / "adapter.safetensors"))
    assert not set(base_w) & set(top_w)  # the frozen run's weights are not saved again
    model = LlavaRunner(syn_vq["model"]).model
    load_adapter(model, tmp_path / "top")
    state = model.state_dict()
    for k, v in base_w.items():  # the projector is the base run's, untouched by the second run
        assert torch.equal(state[k], v), k
    run(tmp_path / "base", "projector", fresh=True, seed=1)  # retrained: the run on top is stale
    with pytest.raises(VtcError, match="retrained since"):
        load_adapter(LlavaRunner(syn_vq["model"]).model, tmp_path / "top")
    shutil.rmtree(tmp_path / "base")
    with pytest.raises(VtcError, match="which is gone"):
        load_adapter(LlavaRunner(syn_vq["model"]).model, tmp_path / "top")
