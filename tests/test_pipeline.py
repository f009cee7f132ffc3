"""End to end on CPU: extract → compress → eval, asserting the exact artifacts written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_videomme_questions
from vtc.cache import Store, video_key
from vtc.stages.compress import CompressOptions, compress
from vtc.stages.demo import synth_video
from vtc.stages.evaluate import EvalOptions, evaluate
from vtc.stages.extract import ExtractOptions, extract


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_pipeline_artifacts(tiny_ckpt, tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    for i, n in enumerate((10, 17)):
        synth_video(vids / f"v{i}.mp4", n_frames=n, seed=i + 1)
    feats = tmp_path / "feats.zarr"
    s = extract(ExtractOptions([str(vids)], feats, model=str(tiny_ckpt["llava_ov"]), frames=3), quiet=True)
    assert s.done == 2

    def video_files(key, names):
        return (
            {f"videos/{key}/zarr.json"}
            | {f"videos/{key}/{n}/zarr.json" for n in names}
            | {f"videos/{key}/{n}/c/{c}" for n, cs in names.items() for c in cs}
        )

    expected = {"zarr.json", "index.jsonl", ".lock", "videos/zarr.json"}
    for v in ("v0", "v1"):
        expected |= video_files(
            video_key(v),
            {"features": ["0/0/0", "1/0/0", "2/0/0"], "frame_indices": ["0"], "timestamps": ["0"]},
        )
    assert _files(feats) == expected

    tok = compress(
        CompressOptions(feats, "dyntok", {"threshold": "0.5"}, out=tmp_path / "dyntok.zarr"), quiet=True
    )
    st = Store.open(tok.out, kind="tokens")
    assert st.meta["identity"]["method"] == {
        "method": "dyntok",
        "threshold": 0.5,
        "marker": True,
        "grid": "pooled",
    }
    assert st.meta["identity"]["parent"]["path"] == str(feats.resolve())
    arrays, attrs = st.read("v0")
    assert set(arrays) == {"tokens", "kind", "pos", "indptr", "src", "weight"}
    assert attrs["base"] == "pooled" and attrs["base_grid"] == [3, 14, 14]
    n = attrs["n_llm_tokens"]
    assert arrays["kind"].shape == (n,) and arrays["indptr"].shape == (n + 1,)
    # one marker per pooled row (3 frames x 14 rows) and one newline
    kinds = arrays["kind"][...].tolist()
    assert kinds.count(1) == 42 and kinds.count(2) == 1 and kinds[-1] == 2
    assert tok.llm_tokens == sum(e["n_llm_tokens"] for e in st.done().values())
    assert tok.tokens_in == 2 * 3 * 729 and tok.stock_tokens == 2 * (3 * 196 + 1)
    assert tok.vs_stock == tok.llm_tokens / tok.stock_tokens

    data = write_videomme_questions(tmp_path / "q" / "q.jsonl", [("v0", "short", "A"), ("v1", "long", "B")])
    r = evaluate(
        EvalOptions("videomme", tok.out, str(tiny_ckpt["llava_ov"]), data=data.parent, out=tmp_path / "eval")
    )
    assert _files(tmp_path / "eval") == {
        "results.json",
        "run.json",  # what the answers in the journal were produced with
        "answers.jsonl",  # one line per answered question: resume point
        ".lock",  # held by the one evaluation writing into this --out
        "task/vtc_videomme_local.yaml",
        "task/vtc_task_utils.py",
    }
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["accuracy"] == r["accuracy"] and saved["visual_tokens"] == r["visual_tokens"]
    per_video = {v: st.done()[v]["n_llm_tokens"] for v in ("v0", "v1")}
    assert sorted(s["visual_tokens"] for s in saved["samples"]) == sorted(per_video.values())
    assert saved["method"]["method"] == "dyntok" and saved["n_samples"] == 2
    assert {"accuracy", "per_duration", "visual_tokens", "tokdense", "wall_time_s", "versions"} <= set(saved)
