"""`vtc eval` as a run: every metric in results.json, resume from the answer journal, zero compression = none."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import write_videomme_questions
from vtc.errors import VtcError
from vtc.eval.llava import LlavaRunner
from vtc.eval.runner import TokenSource
from vtc.stages.compress import CompressOptions, compress
from vtc.stages.evaluate import EvalOptions, evaluate

QUESTIONS = [
    ("vid_a", "short", "A"),
    ("vid_b", "long", "B"),
    ("vid_a", "medium", "C"),
    ("vid_b", "short", "D"),
]


@pytest.fixture(scope="module")
def stores(feature_store, tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    return {
        "none": compress(CompressOptions(feature_store, "none", out=d / "none.zarr"), quiet=True).out,
        "dycoke0": compress(
            CompressOptions(feature_store, "dycoke", {"k": "0", "odd": "keep"}, out=d / "d0.zarr"), quiet=True
        ).out,
        "dycoke": compress(
            CompressOptions(feature_store, "dycoke", {"k": "0.7"}, out=d / "dycoke.zarr"), quiet=True
        ).out,
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_videomme_questions(tmp_path_factory.mktemp("data") / "q.jsonl", QUESTIONS).parent


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return str(tiny_ckpt["llava_ov"])


def _answers(r: dict) -> list:
    return [(s["doc_id"], s["answer"], s["visual_tokens"], s["score"]) for s in r["samples"]]


def test_results_json_carries_every_metric(stores, data, model, tmp_path):
    r = evaluate(EvalOptions("videomme", stores["dycoke"], model, data=data, out=tmp_path / "o", seed=3))
    saved = json.loads((tmp_path / "o" / "results.json").read_text())
    for key in ("accuracy", "visual_tokens", "visual_tokens_decode", "tokdense", "flops", "measured"):
        assert key in saved, key
    assert saved["method"] == {
        "method": "dycoke",
        **{k: v for k, v in saved["method"].items() if k != "method"},
    }
    assert saved["seed"] == 3 and saved["online"] is None and saved["versions"]["vtc"] != "absent"
    assert "git" in saved and saved["batch_size"] == 1
    m = saved["measured"]
    assert m["ttft_s"]["median"] > 0 and m["samples_per_s"] > 0
    assert m["peak_memory"]["kind"] == "process_peak_rss" and m["peak_memory"]["bytes"] > 10 * 2**20
    assert m["resumed_samples"] == 0
    fl = saved["flops"]["mean_per_sample"]
    assert fl["prefill"] > 0 and fl["module"] > 0  # dycoke's own cosine similarities are counted
    # without online pruning, every decode step sees what prefill saw
    assert r["visual_tokens_decode"]["mean"] == pytest.approx(r["visual_tokens"]["mean"])
    for s in r["samples"]:
        assert s["n_new_tokens"] >= 1 and s["ttft_s"] > 0 and s["resumed"] is False


def test_zero_compression_equals_none(stores, data, model, tmp_path):
    """dycoke k=0 (odd T kept) keeps every token in raster order: same logits and answers as none."""
    runner = LlavaRunner(model)
    for vid in ("vid_a", "vid_b"):  # 4 and 3 frames
        a = runner.run(*TokenSource(stores["none"]).load(vid), "What is shown?", keep_logits=True)
        b = runner.run(*TokenSource(stores["dycoke0"]).load(vid), "What is shown?", keep_logits=True)
        assert a.visual_prefill == b.visual_prefill
        assert a.token_ids == b.token_ids and torch.equal(a.logits, b.logits)
    ra = evaluate(EvalOptions("videomme", stores["none"], model, data=data, out=tmp_path / "a"))
    rb = evaluate(EvalOptions("videomme", stores["dycoke0"], model, data=data, out=tmp_path / "b"))
    assert _answers(ra) == _answers(rb) and ra["accuracy"] == rb["accuracy"]
    # and a real reduction is not the same run (the comparison above can fail)
    rc = evaluate(EvalOptions("videomme", stores["dycoke"], model, data=data, out=tmp_path / "c"))
    assert rc["visual_tokens"]["mean"] < ra["visual_tokens"]["mean"]


def test_interrupted_evaluation_resumes_to_the_same_results(stores, data, model, tmp_path, monkeypatch):
    whole = evaluate(EvalOptions("videomme", stores["dycoke"], model, data=data, out=tmp_path / "whole"))

    calls = {"n": 0}
    real_run = LlavaRunner.run

    def dies_on_third(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_run(self, *a, **k)

    monkeypatch.setattr(LlavaRunner, "run", dies_on_third)
    with pytest.raises(VtcError, match="simulated crash"):
        evaluate(EvalOptions("videomme", stores["dycoke"], model, data=data, out=tmp_path / "cut"))
    journal = (tmp_path / "cut" / "answers.jsonl").read_text().splitlines()
    assert len(journal) == 2
    monkeypatch.setattr(LlavaRunner, "run", real_run)
    resumed = evaluate(EvalOptions("videomme", stores["dycoke"], model, data=data, out=tmp_path / "cut"))
    assert resumed["measured"]["resumed_samples"] == 2
    assert _answers(resumed) == _answers(whole)
    assert resumed["accuracy"] == whole["accuracy"] and resumed["metrics"] == whole["metrics"]
    assert sum(s["resumed"] for s in resumed["samples"]) == 2


def test_a_torn_journal_line_is_not_an_answer(stores, data, model, tmp_path):
    out = tmp_path / "o"
    evaluate(EvalOptions("videomme", stores["none"], model, data=data, out=out, limit=2))
    path = out / "answers.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed mid-write
    r = evaluate(EvalOptions("videomme", stores["none"], model, data=data, out=out, limit=2))
    assert r["measured"]["resumed_samples"] == 1 and r["n_samples"] == 2


def test_a_different_run_in_the_same_out_is_refused(stores, data, model, tmp_path):
    out = tmp_path / "o"
    evaluate(EvalOptions("videomme", stores["none"], model, data=data, out=out, limit=1))
    with pytest.raises(VtcError, match="'method' differs.*--fresh"):
        evaluate(EvalOptions("videomme", stores["dycoke"], model, data=data, out=out, limit=1))
    r = evaluate(EvalOptions("videomme", stores["dycoke"], model, data=data, out=out, limit=1, fresh=True))
    assert r["measured"]["resumed_samples"] == 0


def test_log_samples_writes_every_prompt(stores, data, model, tmp_path):
    evaluate(
        EvalOptions(
            "videomme", stores["none"], model, data=data, out=tmp_path / "o", limit=2, log_samples=True
        )
    )
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("arguments" in r or "input" in r for r in rows)


def test_cli_eval_routes_tasks_and_subcommands(stores, data, model, tmp_path, capsys):
    """`vtc eval TASK` is short for `vtc eval run TASK`; both reach the same command."""
    from vtc.cli.app import main

    args = ["--tokens", str(stores["none"]), "--model", model, "--data", str(data), "--limit", "1", "--json"]
    main(["eval", "videomme", *args, "--out", str(tmp_path / "a")])
    short = json.loads(capsys.readouterr().out)
    main(["eval", "run", "videomme", *args, "--out", str(tmp_path / "b")])
    full = json.loads(capsys.readouterr().out)
    assert short["n_samples"] == full["n_samples"] == 1 and "samples" not in short
    assert short["accuracy"] == full["accuracy"]
    with pytest.raises(SystemExit) as e:
        main(["eval", "videomme", *args, "--out", str(tmp_path / "c"), "--batch-size", "0"])
    assert e.value.code == 2


def test_batched_evaluation_gives_the_same_answers(stores, data, model, tmp_path):
    one = evaluate(EvalOptions("videomme", stores["dycoke"], model, data=data, out=tmp_path / "b1"))
    two = evaluate(
        EvalOptions("videomme", stores["dycoke"], model, data=data, out=tmp_path / "b2", batch_size=3)
    )
    assert _answers(one) == _answers(two) and two["batch_size"] == 3


def test_online_methods_through_evaluate(stores, data, model, tmp_path):
    """The online method's pruning shows in decode tokens and FLOPs, and is recorded as a config."""
    base = evaluate(EvalOptions("videomme", stores["none"], model, data=data, out=tmp_path / "none", limit=2))
    kv = evaluate(EvalOptions("videomme", stores["none"], model, data=data, out=tmp_path / "kv", limit=2, online="dycoke-kv", online_params={"l": "1", "p": "0.7"}, max_new_tokens=4))  # fmt: skip
    assert kv["online"] == {"method": "dycoke-kv", "l": 1, "p": 0.7, "tau": 0.9}
    assert kv["visual_tokens"] == base["visual_tokens"]  # prefill unchanged
    # every decode step sees floor(0.3 * N) visual tokens in the last layer
    decoded = [(s, b) for s, b in zip(kv["samples"], base["samples"], strict=True) if s["n_new_tokens"] > 1]
    assert decoded, "the tiny model stopped at its first token: nothing to check"
    for s, b in decoded:
        assert s["visual_tokens_decode"] == int(0.3 * b["visual_tokens"])
    assert kv["visual_tokens_decode"]["mean"] < base["visual_tokens_decode"]["mean"]
    fv = evaluate(EvalOptions("videomme", stores["none"], model, data=data, out=tmp_path / "fv", limit=2, online="fastv", online_params={"k": "1", "ratio": "0.25"}))  # fmt: skip
    assert fv["flops"]["mean_per_sample"]["prefill"] < base["flops"]["mean_per_sample"]["prefill"]
    with pytest.raises(VtcError, match="batch-size 1"):
        evaluate(
            EvalOptions(
                "videomme", stores["none"], model, data=data, out=tmp_path / "x", online="fastv", batch_size=2
            )
        )
    with pytest.raises(VtcError, match="--online"):
        evaluate(
            EvalOptions(
                "videomme", stores["none"], model, data=data, out=tmp_path / "y", online_params={"p": "1"}
            )
        )
