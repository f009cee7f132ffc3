"""benchmarks/gpu.py, the one command a lent GPU machine runs: at toy sizes (--smoke) every step runs on the
CPU here, so the script is known to work before a GPU ever sees it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
def test_smoke_run_writes_every_figure(tmp_path):
    import gpu

    out = tmp_path / "gpu.json"
    rc = gpu.main(["--smoke", "--device", "cpu", "--out", str(out), "--steps", "compress_cuda", "extract_so400m",
                   "eval_prefill_05b"])  # fmt: skip
    report = json.loads(out.read_text())
    assert rc == 0, {k: v.get("error") for k, v in report["steps"].items()}
    comp = report["steps"]["compress_cuda"]
    from vtc.reducers import list_reducers

    assert set(comp["methods"]) == set(list_reducers())
    assert comp["all_equal"] and all("error" not in r for r in comp["methods"].values())
    ext = report["steps"]["extract_so400m"]
    assert ext["tower_frames_per_s"] > 0 and ext["extract_frames"] == 2 * 4 and ext["extract_failed"] == 0
    ev = report["steps"]["eval_prefill_05b"]["methods"]
    assert [r["method"] for r in ev][:2] == ["none", "pool s=3"] and ev[0]["token_ratio"] == 1.0
    assert ev[1]["tokens"] < ev[0]["tokens"]


def test_without_cuda_it_refuses_instead_of_pretending(tmp_path):
    import gpu

    if torch.cuda.is_available():  # the refusal only exists where there is no CUDA
        assert gpu.main(["--out", str(tmp_path / "g.json"), "--steps", "cuda_tests"]) in (0, 1)
        return
    assert gpu.main(["--out", str(tmp_path / "g.json")]) == 1
    assert not (tmp_path / "g.json").exists()
