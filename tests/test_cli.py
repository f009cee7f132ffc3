"""The `vtc` command line: help, one-line errors, exit codes, JSON output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.videos import make_corrupt
from vtc.stages.demo import synth_video


def vtc(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "vtc", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_verbs_and_is_quick():
    r = vtc("--help")
    assert r.returncode == 0
    for verb in ("extract", "compress", "eval", "info", "demo", "flops", "prepare"):
        assert verb in r.stdout
    r = vtc("extract", "--help")
    assert r.returncode == 0 and "Examples" in r.stdout and "--frames" in r.stdout


def test_help_does_not_import_torch():
    code = "import sys; from vtc.cli.app import _register; _register(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert out == "False"


def test_errors_are_one_line_with_exit_2(tmp_path):
    r = vtc("info", tmp_path / "nothing.zarr")
    assert r.returncode == 2
    assert (
        r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: ") and "not a vtc store" in r.stderr
    )
    r = vtc("compress", tmp_path / "nothing.zarr", "--method", "none")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_every_help_ends_with_examples():
    def help_of(*verb):  # wide, so that no example wraps
        env = {**os.environ, "COLUMNS": "250"}
        cmd = [sys.executable, "-m", "vtc", *verb, "--help"]
        return subprocess.run(cmd, capture_output=True, text=True, env=env).stdout

    verbs = re.findall(r"^│ (\w+)\s", help_of(), re.M)
    assert {"extract", "compress", "train", "eval", "report", "viz", "demo"} <= set(verbs), verbs
    for verb in [(), *((v,) for v in verbs), ("eval", "run"), ("eval", "list-online")]:
        lines = [x.strip() for x in help_of(*verb).splitlines() if x.strip()]
        examples = lines[lines.index("Examples:") + 1 :]
        assert examples and all(x.startswith(("vtc ", "accelerate ")) for x in examples), (verb, examples)


def test_compress_list_is_compact_and_names_papers(feature_store):
    from vtc.reducers import list_reducers

    env = {**os.environ, "COLUMNS": "80"}
    r = subprocess.run(
        [sys.executable, "-m", "vtc", "compress", "--list"], capture_output=True, text=True, env=env
    )
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and all(len(x) <= 80 for x in lines)
    for name in list_reducers():  # one line each, starting with the name
        assert sum(x.split()[0] == name for x in lines if x.strip()) == 1, name
    assert len(lines) <= 3 * len(list_reducers())
    r = vtc("compress", "--list", "dyntok")
    assert r.returncode == 0 and "arXiv 2506.03990" in r.stdout and "threshold=0.6" in r.stdout
    assert "seed 0" not in r.stdout and "PAPERS" not in r.stdout
    rows = json.loads(vtc("compress", "--list", "--json").stdout)
    assert {x["method"] for x in rows} == set(list_reducers())
    for x in rows:  # a paper by title and arXiv id (or a named baseline), every parameter explained
        assert "arXiv" in x["paper"] or x["paper"].startswith("baseline"), x
        assert all(p["meaning"] for p in x["parameters"].values()), x["method"]
    r = vtc("compress", "--list", "nope")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "dyntok" in r.stderr


def test_compress_unknown_method_and_parameters(feature_store):
    r = vtc("compress", feature_store, "--method", "bogus")
    assert r.returncode == 2 and "unknown method 'bogus'" in r.stderr and "dyntok" in r.stderr
    r = vtc("compress", feature_store, "--method", "pool", "--set", "size=3")
    assert r.returncode == 2 and "stride" in r.stderr
    r = vtc("compress", feature_store, "--method", "pool", "--set", "stride")
    assert r.returncode == 2 and "key=value" in r.stderr


def test_extract_exit_1_on_failures_with_json_summary(tiny_ckpt, tmp_path):
    synth_video(tmp_path / "ok.mp4", n_frames=8, seed=1)
    make_corrupt(tmp_path / "bad.mp4")
    r = vtc(
        "extract",
        tmp_path / "ok.mp4",
        tmp_path / "bad.mp4",
        "--store",
        tmp_path / "f.zarr",
        "--model",
        tiny_ckpt["llava_ov"],
        "--frames",
        "2",
        "--json",
    )
    assert r.returncode == 1, r.stderr
    s = json.loads(r.stdout)
    assert s["done"] == 1 and [f["id"] for f in s["failed"]] == ["bad"]
    r = vtc("info", tmp_path / "f.zarr", "--json")
    info = json.loads(r.stdout)
    assert info["summary"]["videos done"] == 1 and info["failures"][0]["id"] == "bad"
    r = vtc("info", tmp_path / "f.zarr")
    assert r.returncode == 0 and "failed videos" in r.stdout and "bad" in r.stdout


@pytest.mark.slow
def test_demo_trains_and_prints_accuracy_against_tokens(tmp_path):
    r = vtc("demo", "--workdir", tmp_path / "demo", "--quick", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "vtc demo" in r.stdout
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^\s*(none \(untrained\)|none|pool stride=4|uniform)\s+(\d+)\s+(\d+)\s+(\d+)", r.stdout, re.M)}  # fmt: skip
    assert set(rows) == {"none (untrained)", "none", "pool stride=4", "uniform"}, r.stdout
    assert rows["none"][0] == "129" and rows["pool stride=4"][0] == "33"  # 8 x 4 x 4 + 1; 8 x 2 x 2 + 1
    assert int(rows["none (untrained)"][2]) == 0  # the random model answers nothing
    assert int(rows["none"][2]) >= 80  # colour, learned from the pixels (chance is 25)
    # vtc's own output only: no tqdm bar or log line of lmms-eval, datasets or transformers
    for noise in ("it/s]", "%|", "Postprocessing", "Generating test split", "INFO", "Writing model shards"):
        assert noise not in r.stdout + r.stderr, noise
    report, picture = tmp_path / "demo" / "report" / "report.html", tmp_path / "demo" / "viz.png"
    assert report.is_file() and picture.is_file()
    out = "".join(r.stdout.split())  # rich folds a long path across lines
    assert "report.html" in out and "viz.png" in out


def test_compress_budget_is_exact_and_refused_where_unsupported(feature_store, tmp_path):
    r = vtc(
        "compress",
        feature_store,
        "--method",
        "tome",
        "--budget",
        "50",
        "--out",
        tmp_path / "t.zarr",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["method"]["budget"] == 50 and s["llm_tokens"] == 2 * (50 + 1)
    r = vtc("compress", feature_store, "--method", "dyntok", "--budget", "50")
    assert r.returncode == 2 and "no fixed-length mode" in r.stderr and "tome" in r.stderr


def test_ctrl_c_is_one_line_saying_how_to_resume(monkeypatch, tmp_path, capfd):
    """click turns KeyboardInterrupt into Abort before vtc's main sees it: still one line, exit 130."""
    import vtc.stages.info
    from vtc.cli.app import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(vtc.stages.info, "store_info", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["info", str(tmp_path)])
    assert e.value.code == 130
    err = capfd.readouterr().err.strip()
    assert err.splitlines()[-1] == "interrupted; re-run the same command to resume"
