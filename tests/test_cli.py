"""The `vtc` command line: help, one-line errors, exit codes, JSON output."""

from __future__ import annotations

import json
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


def test_compress_list_and_unknown_method(feature_store):
    r = vtc("compress", "--list")
    assert r.returncode == 0 and "dyntok" in r.stdout and "threshold" in r.stdout
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
