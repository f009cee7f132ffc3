"""Bad inputs and faults found by driving vtc as a user would: each gives one line (exit 2 for usage and
input errors), and nothing is lost. One test (or more) per defect of the fault matrix."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_videomme_questions
from tests.videos import make_corrupt
from vtc.cache import INDEX_FILE, Store
from vtc.cache.jsonl import exclusive
from vtc.errors import VtcError
from vtc.stages.compress import CompressOptions, compress
from vtc.stages.demo import synth_video
from vtc.stages.evaluate import EvalOptions, evaluate
from vtc.stages.extract import ExtractOptions, extract


def vtc(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "vtc", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def one_line_error(r, code=2) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    # (a progress bar without its newline may precede the line: issue 10 quiets lmms-eval's bars)
    lines = [x[x.index("error: ") :] for x in r.stderr.splitlines() if "error: " in x]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    synth_video(d / "ok.mp4", n_frames=8, seed=1)
    return d / "ok.mp4"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = [("vid_a", "short", "A"), ("vid_b", "long", "B")]
    return write_videomme_questions(tmp_path_factory.mktemp("data") / "q.jsonl", rows).parent


# ----------------------------------------------------------------------------- 1. a model that is not LLaVA-OV
def test_eval_refuses_a_checkpoint_that_is_not_llava_onevision(tiny_ckpt, feature_store, data, tmp_path):
    from vtc.eval.llava import LlavaRunner

    with pytest.raises(
        VtcError, match="is a siglip_vision_model checkpoint; vtc eval needs a LLaVA-OneVision"
    ):
        LlavaRunner(str(tiny_ckpt["siglip"]))
    r = vtc("eval", "videomme", "--tokens", feature_store, "--data", data, "--model", tiny_ckpt["siglip"],
            "--out", tmp_path / "o")  # fmt: skip
    assert "LLaVA-OneVision" in one_line_error(r)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- 2. torn and foreign lines
def _copy_store(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


@pytest.mark.parametrize(
    "junk",
    [b"\xff\xfe not utf-8 \x80\n", b'{"id": "x"}\n', b'{"id": "y", "status": "done"}\n', b"[1, 2]\n"],
    ids=["invalid-utf8", "id-only", "done-without-key", "not-an-object"],
)
def test_foreign_index_lines_are_skipped_with_one_warning(feature_store, tmp_path, capsys, junk):
    path = _copy_store(feature_store, tmp_path / "f.zarr")
    with open(path / INDEX_FILE, "ab") as f:
        f.write(junk)
    st = Store.open(path)
    assert set(st.done()) == {"vid_a", "vid_b"}
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"{INDEX_FILE}: skipped line 3" in err
    r = vtc("info", path)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "skipped line 3" in r.stderr
    # the store stays writable: the next append starts on a line of its own
    st.fail("vid_c", "corrupt")
    assert Store.open(path).failed()["vid_c"]["reason"] == "corrupt"


def test_foreign_token_index_line_does_not_break_info(feature_store, tmp_path):
    tok = compress(CompressOptions(feature_store, "pool", out=tmp_path / "t.zarr"), quiet=True).out
    with open(Path(tok) / INDEX_FILE, "a") as f:
        f.write('{"id": "z", "status": "done", "key": "k"}\n')  # lacks the token counts info reads
    r = vtc("info", tok, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["videos done"] == 2


@pytest.fixture(scope="module")
def answered(feature_store, data, tiny_ckpt, tmp_path_factory):
    """An evaluation output with two journalled answers (and its results, to compare resumed runs with)."""
    out = tmp_path_factory.mktemp("eval") / "o"
    r = evaluate(EvalOptions("videomme", feature_store, str(tiny_ckpt["llava_ov"]), data=data, out=out))
    return out, r


@pytest.mark.parametrize(
    "junk",
    [b"\xff\xfe\x80 torn\n", b'{"key": "K"}\n'],
    ids=["invalid-utf8", "key-only"],
)
def test_foreign_journal_lines_are_skipped_and_regenerated(answered, feature_store, data, tiny_ckpt, tmp_path,
                                                            capsys, junk):  # fmt: skip
    src, whole = answered
    out = tmp_path / "o"
    shutil.copytree(src, out)
    lines = (out / "answers.jsonl").read_bytes().splitlines(keepends=True)
    (out / "answers.jsonl").write_bytes(lines[0] + junk)  # the second answer replaced by junk
    capsys.readouterr()
    r = evaluate(EvalOptions("videomme", feature_store, str(tiny_ckpt["llava_ov"]), data=data, out=out))
    assert "answers.jsonl: skipped line 2" in capsys.readouterr().err
    assert r["measured"]["resumed_samples"] == 1 and r["n_samples"] == 2
    assert [s["answer"] for s in r["samples"]] == [s["answer"] for s in whole["samples"]]


def test_a_truncated_run_json_is_refused_with_one_line(answered, feature_store, data, tiny_ckpt, tmp_path):
    src, _ = answered
    out = tmp_path / "o"
    shutil.copytree(src, out)
    text = (out / "run.json").read_text()
    (out / "run.json").write_text(text[: len(text) // 2])
    args = ("eval", "videomme", "--tokens", feature_store, "--data", data, "--model", tiny_ckpt["llava_ov"])
    assert "--fresh" in one_line_error(vtc(*args, "--out", out))
    assert (out / "answers.jsonl").read_text().count("\n") == 2  # nothing lost
    r = vtc(*args, "--out", out, "--fresh", "--json")
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- 3. non-finite numbers
@pytest.fixture(scope="module")
def nan_store(feature_store, tmp_path_factory):
    """The feature store with a third video, vid_a's features with one NaN and one inf."""
    path = _copy_store(feature_store, tmp_path_factory.mktemp("nan") / "f.zarr")
    st = Store.open(path)
    arrays, _ = st.read("vid_a")
    x = np.array(arrays["features"][...])
    x[1, 3, 0], x[2, 0, 5] = np.nan, np.inf
    st.write(
        "vid_nan", {"features": x, "frame_indices": np.arange(len(x))}, attrs={}, summary={"n_frames": len(x)}
    )
    return path


@pytest.mark.parametrize("method", ["none", "pool", "dyntok", "dycoke", "tome", "vqtoken"])
def test_compress_records_non_finite_features_as_failed(nan_store, feature_store, tmp_path, method):
    s = compress(CompressOptions(nan_store, method, out=tmp_path / "t.zarr"), quiet=True)
    assert [f["id"] for f in s.failed] == ["vid_nan"] and "non-finite features (2 of" in s.failed[0]["reason"]
    tok = Store.open(tmp_path / "t.zarr")
    assert set(tok.done()) == {"vid_a", "vid_b"} and set(tok.failed()) == {"vid_nan"}
    clean = compress(CompressOptions(feature_store, method, out=tmp_path / "c.zarr"), quiet=True)
    assert s.llm_tokens == clean.llm_tokens  # the counts are the clean videos' own
    for vid in ("vid_a", "vid_b"):
        a, _ = tok.read(vid)
        assert np.isfinite(a["tokens"][...]).all()


def test_compress_cli_exits_1_and_names_the_video(nan_store, tmp_path):
    r = vtc("compress", nan_store, "--method", "pool", "--out", tmp_path / "t.zarr", "-q")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "failed vid_nan: non-finite features" in r.stderr


def test_eval_refuses_non_finite_tokens(nan_store, tiny_ckpt, tmp_path):
    data = write_videomme_questions(tmp_path / "d" / "q.jsonl", [("vid_nan", "short", "A")]).parent
    r = vtc("eval", "videomme", "--tokens", nan_store, "--data", data, "--model", tiny_ckpt["llava_ov"],
            "--out", tmp_path / "o")  # fmt: skip
    assert "vid_nan" in one_line_error(r) and "non-finite" in r.stderr


def test_extract_never_writes_non_finite_features(tiny_ckpt, clip, tmp_path):
    from transformers import SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(tiny_ckpt["siglip"])
    body = getattr(model, "vision_model", model)  # transformers 4.x nests it; 5.x does not
    body.embeddings.patch_embedding.weight.data[0, 0, 0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan-siglip")
    s = extract(
        ExtractOptions([str(clip)], tmp_path / "f.zarr", model=str(tmp_path / "nan-siglip"), frames=2),
        quiet=True,
    )
    assert s.done == 0 and "non-finite features" in s.failed[0]["reason"]
    st = Store.open(tmp_path / "f.zarr")
    assert not st.done() and "non-finite" in st.failed()["ok"]["reason"]


# ----------------------------------------------------------------------------- 4. non-finite parameters
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_parameter_values_are_refused(feature_store, tmp_path, value):
    r = vtc("compress", feature_store, "--method", "dyntok", "--set", f"threshold={value}", "--out",
            tmp_path / "t.zarr")  # fmt: skip
    assert "must be a finite number" in one_line_error(r)
    assert not (tmp_path / "t.zarr").exists()
    from vtc.eval.online import get_online

    with pytest.raises(VtcError, match="finite"):
        get_online("dycoke-kv", p=value)


# ----------------------------------------------------------------------------- 5. the lock comes first
def _race_create(path, frames, barrier, results):
    import zarr

    real = zarr.create_group

    def slow_create(*a, **k):  # widen the window between the identity check and the creation
        import time

        time.sleep(0.3)
        return real(*a, **k)

    zarr.create_group = slow_create
    ident = {"encoder": {"model": "m"}, "sampling": {"frames": frames}}
    barrier.wait()
    try:
        st = Store.create(path, "features", ident)
        with st.writing():
            st.write(f"v{frames}", {"x": np.zeros(frames)}, attrs={"frames": frames})
        results.put((frames, "ok"))
    except VtcError as e:
        results.put((frames, str(e)))
    except Exception as e:  # noqa: BLE001 - the test reports anything else as the defect
        results.put((frames, f"CRASH {type(e).__name__}: {e}"))


def test_two_runs_started_together_cannot_mix_identities(tmp_path):
    ctx = mp.get_context("fork")
    for attempt in range(3):
        path = tmp_path / f"s{attempt}.zarr"
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_race_create, args=(path, f, barrier, results)) for f in (4, 8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        got = dict(results.get(timeout=5) for _ in procs)
        assert sorted(v == "ok" for v in got.values()) == [False, True], got
        loser = next(v for v in got.values() if v != "ok")
        assert "being written by another process" in loser or "different provenance" in loser, loser
        st = Store.open(path)
        frames = st.meta["identity"]["sampling"]["frames"]
        assert set(st.done()) == {f"v{frames}"}  # only the run whose identity the store has wrote into it
        assert Store.open(path).read(f"v{frames}")[1]["frames"] == frames


# ----------------------------------------------------------------------------- 6. one evaluation per --out
def test_a_second_evaluation_into_the_same_out_is_refused(feature_store, data, tiny_ckpt, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with exclusive(out / ".lock", "held by the test"):
        with pytest.raises(VtcError, match="being written by another process"):
            evaluate(EvalOptions("videomme", feature_store, str(tiny_ckpt["llava_ov"]), data=data, out=out))
    assert not (out / "answers.jsonl").exists()
    r = evaluate(EvalOptions("videomme", feature_store, str(tiny_ckpt["llava_ov"]), data=data, out=out))
    assert r["n_samples"] == 2


# ----------------------------------------------------------------------------- 7, 8. preconditions and checkpoints
def test_visionzip_without_attention_leaves_no_output(feature_store, tmp_path):
    r = vtc("compress", feature_store, "--method", "visionzip", "--out", tmp_path / "t.zarr")
    assert "--save-attention" in one_line_error(r)
    assert not (tmp_path / "t.zarr").exists()


@pytest.fixture
def truncated_ckpt(tiny_ckpt, tmp_path):
    d = shutil.copytree(tiny_ckpt["siglip"], tmp_path / "trunc")
    w = Path(d) / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    return Path(d)


def test_a_truncated_checkpoint_is_one_line_and_leaves_no_store(truncated_ckpt, clip, tmp_path):
    r = vtc("extract", clip, "--store", tmp_path / "f.zarr", "--model", truncated_ckpt, "--frames", "2")
    assert "model.safetensors" in one_line_error(r)
    assert not (tmp_path / "f.zarr").exists()


def test_a_checkpoint_without_config_is_one_line(tiny_ckpt, clip, tmp_path):
    d = shutil.copytree(tiny_ckpt["siglip"], tmp_path / "noconf")
    (Path(d) / "config.json").unlink()
    r = vtc("extract", clip, "--store", tmp_path / "f.zarr", "--model", d, "--frames", "2")
    assert "config.json" in one_line_error(r)
    assert not (tmp_path / "f.zarr").exists()
    r = vtc("eval", "videomme", "--tokens", tmp_path / "x.zarr", "--model", d, "--out", tmp_path / "o")
    assert "Traceback" not in r.stderr and r.returncode == 2
    assert not (tmp_path / "o").exists()  # the failed run leaves no output directory behind


def test_eval_with_a_truncated_checkpoint_is_one_line(tiny_ckpt, tmp_path):
    from vtc.eval.llava import LlavaRunner

    d = shutil.copytree(tiny_ckpt["llava_ov"], tmp_path / "trunc")
    w = Path(d) / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(VtcError, match=r"cannot load weights .*model\.safetensors"):
        LlavaRunner(str(d))


# ----------------------------------------------------------------------------- 9, 10. what extract says
def test_a_directory_without_videos_is_named(tiny_ckpt, clip, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no videos here")
    s = extract(ExtractOptions([str(clip), str(tmp_path / "empty")], tmp_path / "f.zarr", model=str(tiny_ckpt["siglip"]), frames=2), quiet=True)  # fmt: skip
    assert s.done == 1 and len(s.warnings) == 1 and "empty" in s.warnings[0]
    r = vtc("extract", clip, tmp_path / "empty", "--store", tmp_path / "g.zarr", "--model", tiny_ckpt["siglip"],
            "--frames", "2", "-q")  # fmt: skip
    assert r.returncode == 0 and "warning" in r.stderr and "empty" in r.stderr and "no video" in r.stderr


def test_quiet_extract_still_names_each_failure(tiny_ckpt, clip, tmp_path):
    make_corrupt(tmp_path / "bad.mp4")
    make_corrupt(tmp_path / "worse.mp4")
    r = vtc("extract", clip, tmp_path / "bad.mp4", tmp_path / "worse.mp4", "--store", tmp_path / "f.zarr",
            "--model", tiny_ckpt["siglip"], "--frames", "2", "-q")  # fmt: skip
    assert r.returncode == 1 and r.stdout == ""
    failed = [x for x in r.stderr.splitlines() if x.startswith("failed ")]
    assert len(failed) == 2 and "bad" in failed[0] and "worse" in failed[1]


# ----------------------------------------------------------------------------- 11. one keep count
def test_flops_and_evaluation_keep_the_same_dycoke_count():
    from vtc.eval.flops import LLMShape, online_pruning
    from vtc.eval.online import get_online

    shape = LLMShape(layers=4, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=10)
    for n, p in [(10, 0.9), (10, 0.7), (6273, 0.7), (3, 1.0), (7, 0.0), (100, 0.33)]:
        _, dec = online_pruning(shape, n, dycoke_l=2, dycoke_p=p)
        assert dec[2:] == [get_online("dycoke-kv", l=2, p=p).n_keep(n)] * 2, (n, p)
    assert get_online("dycoke-kv", p=0.9).n_keep(10) == 1


# ----------------------------------------------------------------------------- found while closing the matrix
def test_a_torn_zarr_json_is_one_line(feature_store, tmp_path):
    path = _copy_store(feature_store, tmp_path / "f.zarr")
    text = (path / "zarr.json").read_text()
    (path / "zarr.json").write_text(text[: len(text) // 3])
    assert "zarr.json is unreadable" in one_line_error(vtc("info", path))
    r = vtc("compress", path, "--method", "pool", "--out", tmp_path / "t.zarr")
    assert "zarr.json is unreadable" in one_line_error(r) and not (tmp_path / "t.zarr").exists()


def test_a_damaged_chunk_fails_that_video_only(feature_store, data, tiny_ckpt, tmp_path):
    path = _copy_store(feature_store, tmp_path / "f.zarr")
    key = Store.open(path).done()["vid_a"]["key"]
    chunk = next(p for p in sorted((path / "videos" / key / "features").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:50])  # truncated on disk
    s = compress(CompressOptions(path, "pool", out=tmp_path / "t.zarr"), quiet=True)
    assert s.done == 1 and [f["id"] for f in s.failed] == ["vid_a"]
    assert "array 'features' is damaged" in s.failed[0]["reason"]
    r = vtc("eval", "videomme", "--tokens", path, "--data", data, "--model", tiny_ckpt["llava_ov"],
            "--out", tmp_path / "o")  # fmt: skip
    assert "vid_a" in one_line_error(r) and "damaged" in r.stderr
