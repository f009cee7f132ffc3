"""`vtc eval --processes N`: requests sharded over spawned processes (and torchrun ranks), each journalling
its own answers; the merged results equal one process's, resume works per rank and across N."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_videomme_questions
from vtc.cache.jsonl import exclusive
from vtc.errors import VtcError
from vtc.stages.compress import CompressOptions, compress
from vtc.stages.evaluate import EvalOptions, evaluate
from vtc.stages.shards import FAIL_HOOK

QUESTIONS = [
    ("vid_a", "short", "A"),
    ("vid_b", "long", "B"),
    ("vid_a", "medium", "C"),
    ("vid_b", "short", "D"),
    ("vid_a", "long", "A"),
]
TIMINGS = ("ttft_s", "decode_s_per_token")


@pytest.fixture(scope="module")
def store(feature_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "dycoke.zarr"
    return compress(CompressOptions(feature_store, "dycoke", {"k": "0.7"}, out=out), quiet=True).out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_videomme_questions(tmp_path_factory.mktemp("data") / "q.jsonl", QUESTIONS).parent


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return str(tiny_ckpt["llava_ov"])


@pytest.fixture(scope="module")
def one(store, data, model, tmp_path_factory):
    """The single-process run every sharded run is compared with."""
    return evaluate(EvalOptions("videomme", store, model, data=data, out=tmp_path_factory.mktemp("one")))


def _opt(store, data, model, out, **kw) -> EvalOptions:
    return EvalOptions("videomme", store, model, data=data, out=out, **kw)


def comparable(r: dict) -> dict:
    """Results without what is measured (timings, memory, how many processes ran) and the git hash (others
    commit to this checkout while the tests run)."""
    r = {k: v for k, v in r.items() if k not in ("measured", "wall_time_s", "processes", "git")}
    r["samples"] = [{k: v for k, v in s.items() if k not in TIMINGS} for s in r["samples"]]
    return r


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_two_processes_give_one_process_results(store, data, model, one, tmp_path):
    out = tmp_path / "two"
    two = evaluate(_opt(store, data, model, out, processes=2))
    assert comparable(two) == comparable(one)
    assert two["accuracy"] == one["accuracy"] and two["flops"] == one["flops"]
    assert two["processes"] == 2 and one["processes"] == 1
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock",
        "answers.rank0-of-2.jsonl",
        "answers.rank1-of-2.jsonl",
        "results.json",
        "run.json",
        "task",
    ]
    # request i on rank i mod 2: 3 and 2 of the 5
    rank0, rank1 = (lines(out / f"answers.rank{r}-of-2.jsonl") for r in (0, 1))
    assert (len(rank0), len(rank1)) == (3, 2)
    by_doc = {s["doc_id"]: s["answer"] for s in one["samples"]}
    assert sorted(json.loads(x)["doc_id"] for x in rank0) == [0, 2, 4]
    assert all(json.loads(x)["answer"] == by_doc[json.loads(x)["doc_id"]] for x in rank0 + rank1)
    m = two["measured"]
    assert m["resumed_samples"] == 0 and m["ttft_s"]["median"] > 0  # latencies of both ranks' samples
    assert len(m["peak_memory"]["per_rank"]) == 2 and m["peak_memory"]["bytes"] > 10 * 2**20
    assert json.loads((out / "results.json").read_text())["accuracy"] == one["accuracy"]


def test_resume_answers_only_what_a_rank_lost_and_any_n_reuses_all(store, data, model, one, tmp_path):
    out = tmp_path / "o"
    evaluate(_opt(store, data, model, out, processes=2))
    rank0, rank1 = out / "answers.rank0-of-2.jsonl", out / "answers.rank1-of-2.jsonl"
    kept0 = rank0.read_text()
    rank1.write_text(lines(rank1)[0] + "\n")  # rank 1 lost its second answer
    again = evaluate(_opt(store, data, model, out, processes=2))
    assert again["measured"]["resumed_samples"] == 4
    assert sum(not s["resumed"] for s in again["samples"]) == 1
    assert rank0.read_text() == kept0 and len(lines(rank1)) == 2
    assert comparable({**again, "samples": []}) == comparable({**one, "samples": []})
    assert [s["answer"] for s in again["samples"]] == [s["answer"] for s in one["samples"]]
    # one process (or three) over the same out dir reuses every rank's answers: nothing left to generate
    alone = evaluate(_opt(store, data, model, out))
    assert alone["measured"]["resumed_samples"] == 5 and not (out / "answers.jsonl").exists()
    assert [s["answer"] for s in alone["samples"]] == [s["answer"] for s in one["samples"]]
    # --fresh discards the journals of every N
    fresh = evaluate(_opt(store, data, model, out, fresh=True))
    assert fresh["measured"]["resumed_samples"] == 0 and not list(out.glob("answers.rank*"))


def test_a_crashed_rank_is_named_and_a_rerun_completes(store, data, model, one, tmp_path, monkeypatch):
    out = tmp_path / "o"
    monkeypatch.setenv(FAIL_HOOK, "1:1")  # rank 1 fails right after journalling its first answer
    with pytest.raises(VtcError) as e:
        evaluate(_opt(store, data, model, out, processes=2))
    msg = str(e.value)
    assert msg.startswith("rank 1 of 2 failed:") and FAIL_HOOK in msg and "\n" not in msg
    assert len(lines(out / "answers.rank1-of-2.jsonl")) == 1  # kept for the resume
    monkeypatch.delenv(FAIL_HOOK)
    r = evaluate(_opt(store, data, model, out, processes=2))
    assert r["measured"]["resumed_samples"] >= 1
    assert comparable({**r, "samples": []}) == comparable({**one, "samples": []})
    assert [s["answer"] for s in r["samples"]] == [s["answer"] for s in one["samples"]]


def test_the_lock_stops_a_second_evaluation_and_bad_options_are_one_line(store, data, model, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with exclusive(out / ".lock", "a test"), pytest.raises(VtcError, match="another process"):
        evaluate(_opt(store, data, model, out, processes=2))
    assert not list(out.glob("answers*"))
    with pytest.raises(VtcError, match="--device cuda \\(process i uses cuda:i\\)"):
        evaluate(_opt(store, data, model, tmp_path / "c1", processes=2, device="cuda:1"))
    with pytest.raises(VtcError, match="--processes must be >= 1"):
        evaluate(_opt(store, data, model, tmp_path / "z", processes=0))
    from vtc.cli.app import main

    with pytest.raises(SystemExit) as ex:
        main(
            ["eval", "videomme", "-t", str(store), "--model", model, "--data", str(data), "--processes", "0"]
        )
    assert ex.value.code == 2


def test_torchrun_ranks_merge_to_one_process_results(store, data, model, one, tmp_path):
    """`torchrun -m vtc eval` (what `accelerate launch -m vtc eval` starts too): 2 ranks, rank 0 merges."""
    out = tmp_path / "tr"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "vtc", "eval", "videomme", "-t", str(store), "--model", model, "--data", str(data)]
    cmd += ["--out", str(out), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    printed = json.loads(p.stdout[p.stdout.index("{") :])  # rank 0 alone prints
    saved = json.loads((out / "results.json").read_text())
    assert printed["accuracy"] == saved["accuracy"] == one["accuracy"]
    assert comparable(saved) == comparable(one) and saved["processes"] == 2
    assert (
        len(lines(out / "answers.rank0-of-2.jsonl")) == 3
        and len(lines(out / "answers.rank1-of-2.jsonl")) == 2
    )
