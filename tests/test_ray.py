"""`vtc extract --engine ray` on a local two-CPU Ray: the same store as the local engine, resume, a lost
encoder actor, one-line errors. No GPU: the encoder actors run on CPU. Marked slow: each dataset starts its
encoder actor afresh (a new process importing torch), about ten seconds on two cores."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray

from tests.videos import make_corrupt
from vtc.cache import INDEX_FILE, Store
from vtc.errors import VtcError
from vtc.stages import compress_ray, extract_ray
from vtc.stages.compress import CompressOptions
from vtc.stages.compress import compress as compress_local
from vtc.stages.demo import synth_video
from vtc.stages.extract import ExtractOptions
from vtc.stages.extract import extract as extract_local

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for all the Ray tests (this file), shut down after them so the rest of the suite has
    the cores; two CPUs: one encoder actor, one decode task at a time."""
    if not ray.is_initialized():
        # PYTHONPATH: the decode children in Ray's workers import the test decoders (tests.videos)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three good videos, one that hangs the decoder, one that crashes it, one corrupt file."""
    d = tmp_path_factory.mktemp("rayclips")
    for i in range(3):
        synth_video(d / f"a{i}_ok.mp4", n_frames=12 + 4 * i, seed=i + 1)
    for name in ("b_hang", "c_crash"):
        (d / f"{name}.mp4").write_bytes((d / "a0_ok.mp4").read_bytes())
    make_corrupt(d / "e_corrupt.mp4")
    return d


def _opt(inputs, store, tiny_ckpt, **kw) -> ExtractOptions:
    return ExtractOptions(
        [str(x) for x in inputs], store, model=str(tiny_ckpt["llava_ov"]), frames=4, timeout=3, **kw
    )


@pytest.fixture(scope="module")
def local_store(clips, tiny_ckpt, tmp_path_factory):
    """The local engine's store of ``clips``: the reference."""
    path = tmp_path_factory.mktemp("local") / "f.zarr"
    s = extract_local(
        _opt([clips], path, tiny_ckpt, workers=1), quiet=True, _decode_fn="tests.videos:faulty_decode"
    )
    assert (s.done, len(s.failed)) == (3, 3)
    return path


def _index_lines(store) -> list[dict]:
    """The store's index lines in order, without their wall-clock times."""
    lines = (Path(store) / INDEX_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def _assert_same_arrays(store, ref, ids) -> None:
    a_st, b_st = Store.open(store), Store.open(ref)
    for vid in ids:
        (a, attrs_a), (b, attrs_b) = a_st.load(vid), b_st.load(vid)
        assert attrs_a == attrs_b and set(a) == set(b) == {"features", "frame_indices", "timestamps"}
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (vid, k)
            assert a[k].tobytes() == b[k].tobytes(), (vid, k)


@pytest.mark.slow
def test_ray_engine_writes_the_local_engines_store(ray_cluster, clips, local_store, tiny_ckpt, tmp_path):
    """Same index lines (but times) in the same order and byte-identical arrays, failures (a hang, a
    crash, a corrupt file) recorded with the same reasons; a second run skips every done video."""
    store = tmp_path / "r.zarr"
    s = extract_ray.extract(
        _opt([clips], store, tiny_ckpt), quiet=True, _decode_fn="tests.videos:faulty_decode"
    )
    assert (s.done, s.skipped, s.frames, s.workers) == (3, 0, 12, 1)
    reasons = {f["id"]: f["reason"] for f in s.failed}
    assert reasons["b_hang"] == "decode timed out after 3s"
    assert reasons["c_crash"].startswith("decoder crashed")
    assert reasons["e_corrupt"].startswith("cannot open")
    ref = _index_lines(local_store)
    assert [(e["id"], e["status"]) for e in ref] == [
        ("a0_ok", "done"),
        ("a1_ok", "done"),
        ("a2_ok", "done"),
        ("b_hang", "failed"),
        ("c_crash", "failed"),
        ("e_corrupt", "failed"),
    ]
    assert _index_lines(store) == ref
    _assert_same_arrays(store, local_store, ["a0_ok", "a1_ok", "a2_ok"])

    ok = [clips / f"a{i}_ok.mp4" for i in range(3)]
    again = extract_ray.extract(_opt(ok, store, tiny_ckpt), quiet=True)
    assert (again.done, again.skipped, again.failed) == (0, 3, [])
    assert _index_lines(store) == ref  # nothing appended


@pytest.mark.slow
def test_an_interrupted_run_keeps_the_windows_it_finished(
    ray_cluster, clips, local_store, tiny_ckpt, tmp_path, monkeypatch
):
    """Windows of two videos; the run dies while committing its second window: the first stays
    indexed, the rerun does only the rest, and no video is indexed twice."""
    monkeypatch.setattr(extract_ray, "WINDOW_MIN", 2)
    monkeypatch.setattr(extract_ray, "WINDOW_PER_ACTOR", 1)
    inputs = [clips / f"a{i}_ok.mp4" for i in range(3)] + [clips / "e_corrupt.mp4"]
    store = tmp_path / "r.zarr"
    real, windows = extract_ray._commit, []

    def dying_commit(st, summary, todo, results, bar):
        windows.append([vid for vid, _ in todo])
        if len(windows) == 2:
            raise RuntimeError("killed mid-run")
        real(st, summary, todo, results, bar)

    monkeypatch.setattr(extract_ray, "_commit", dying_commit)
    with pytest.raises(Exception, match="killed mid-run"):
        extract_ray.extract(_opt(inputs, store, tiny_ckpt), quiet=True)
    assert windows == [["a0_ok", "a1_ok"], ["a2_ok", "e_corrupt"]]
    assert [e["id"] for e in _index_lines(store)] == ["a0_ok", "a1_ok"]

    monkeypatch.setattr(extract_ray, "_commit", real)
    s = extract_ray.extract(_opt(inputs, store, tiny_ckpt), quiet=True)
    assert (s.done, s.skipped, [f["id"] for f in s.failed]) == (1, 2, ["e_corrupt"])
    lines = _index_lines(store)
    assert [(e["id"], e["status"]) for e in lines] == [
        ("a0_ok", "done"),
        ("a1_ok", "done"),
        ("a2_ok", "done"),
        ("e_corrupt", "failed"),
    ]
    _assert_same_arrays(store, local_store, ["a0_ok", "a1_ok", "a2_ok"])


@pytest.mark.slow
def test_a_lost_encoder_actor_costs_nothing(ray_cluster, clips, local_store, tiny_ckpt, tmp_path):
    """The encoder actor exits (as a lost node would take it) on its first video: Ray restarts it and
    retries the video; the run completes with every video indexed once and the same bytes."""
    marker = tmp_path / "die-once"
    marker.touch()
    store = tmp_path / "r.zarr"
    inputs = [clips / f"a{i}_ok.mp4" for i in range(3)]
    s = extract_ray.extract(_opt(inputs, store, tiny_ckpt), quiet=True, _die_marker=str(marker))
    assert not marker.exists(), "the actor should have died once"
    assert (s.done, s.failed) == (3, [])
    lines = _index_lines(store)
    assert [e["id"] for e in lines] == ["a0_ok", "a1_ok", "a2_ok"]
    assert lines == _index_lines(local_store)[:3]
    _assert_same_arrays(store, local_store, ["a0_ok", "a1_ok", "a2_ok"])


def test_an_actor_pool_the_cluster_cannot_hold_is_refused(ray_cluster, clips, tiny_ckpt, tmp_path):
    """Two CPU actors on two CPUs would leave none for decoding: the run would hang, so it is refused."""
    store = tmp_path / "r.zarr"
    with pytest.raises(VtcError, match=r"--actors 2: the Ray cluster has 2 CPU\(s\)"):
        extract_ray.extract(_opt([clips / "a0_ok.mp4"], store, tiny_ckpt), quiet=True, actors=2)
    assert not store.exists()  # the store this run made is not left behind
    with pytest.raises(VtcError, match="the Ray cluster has no GPU"):
        extract_ray.extract(_opt([clips / "a0_ok.mp4"], store, tiny_ckpt, device="cuda"), quiet=True)


@pytest.mark.slow
def test_weights_that_do_not_load_in_the_actor_are_a_one_line_error(ray_cluster, clips, tiny_ckpt, tmp_path):
    """The tower loads in the encoder actor; Ray reports its failure as an actor death whose text holds
    the VtcError: it comes back as that VtcError, and the new store is removed."""
    bad = tmp_path / "bad-ckpt"
    shutil.copytree(tiny_ckpt["llava_ov"], bad)
    for f in bad.glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    store = tmp_path / "r.zarr"
    opt = _opt([clips / "a0_ok.mp4"], store, tiny_ckpt)
    opt.model = str(bad)
    with pytest.raises(VtcError, match=r"^cannot load weights of '.*bad-ckpt'"):
        extract_ray.extract(opt, quiet=True)
    assert not store.exists()


def test_unreachable_address_and_missing_ray_are_one_line_errors(clips, tiny_ckpt, tmp_path, monkeypatch):
    store = tmp_path / "r.zarr"
    feats = _feature_store(tmp_path / "f.zarr")
    extract = [
        "extract",
        str(clips / "a0_ok.mp4"),
        "--store",
        str(store),
        "--model",
        str(tiny_ckpt["llava_ov"]),
    ]
    for args, address in (
        (extract, "127.0.0.1:1"),
        (extract, "ray://127.0.0.1:1"),
        (["compress", str(feats), "--method", "dyntok"], "127.0.0.1:1"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "vtc", *args, "--engine", "ray", "--address", address],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [
            f"error: cannot reach the Ray cluster at {address}: Connection refused"
        ]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr"]  # refused before a store is made
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(VtcError, match=r"pip install 'vtc\[ray\]'"):
        extract_ray.extract(_opt([clips], store, tiny_ckpt))
    with pytest.raises(VtcError, match=r"pip install 'vtc\[ray\]'"):
        compress_ray.compress(CompressOptions(feats, "dyntok"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr"]


# ---------------------------------------------------------------------------------------- compress


def _feature_store(path) -> Path:
    """Five videos of random features (frames 3, 2, 4, 1, 3), the fourth NaN, plus a failed one."""
    st = Store.create(path, "features", {"encoder": {"grid": [6, 6], "dim": 8}, "sampling": {}})
    rng = np.random.default_rng(0)
    for vid, t in (("a", 3), ("b", 2), ("c", 4), ("d_nan", 1), ("e", 3)):
        f = rng.standard_normal((t, 36, 8)).astype(np.float16)
        if vid == "d_nan":
            f[0, 2, 3] = np.nan
        st.write(vid, {"features": f}, attrs={}, summary={"n_frames": t})
    st.fail("broken", "cannot open as a video (corrupt, truncated or not a media file)")
    return Path(path)


@pytest.mark.slow
def test_ray_compress_writes_the_local_engines_token_store(ray_cluster, tmp_path):
    """Batches of two (the NaN video fails inside the second, and is written before its batch-mate, as
    the local engine does): the same index lines but times and measured reduce times, in the same
    order, byte-identical arrays, the same summary; then a rerun
    skips every done video."""
    feats = _feature_store(tmp_path / "f.zarr")
    for method, params in (("random", {"budget": "7"}), ("dyntok", {})):
        kw = {"params": params, "seed": 3, "batch_size": 2}
        ref = compress_local(
            CompressOptions(feats, method, out=tmp_path / f"{method}-l.zarr", **kw), quiet=True
        )
        out = tmp_path / f"{method}-r.zarr"
        s = compress_ray.compress(CompressOptions(feats, method, out=out, **kw), quiet=True)
        fields = ("done", "skipped", "parent_failed", "tokens_in", "llm_tokens", "stock_tokens", "failed")
        assert [getattr(s, f) for f in fields] == [getattr(ref, f) for f in fields]
        assert (s.done, [f["id"] for f in s.failed]) == (4, ["d_nan"])

        def lines(store):
            return [{k: v for k, v in e.items() if k != "reduce_s"} for e in _index_lines(store)]

        assert [e["id"] for e in lines(out)] == ["a", "b", "d_nan", "c", "e"]
        assert lines(out) == lines(ref.out)
        assert [e.get("reduce_batch") for e in lines(out)] == [2, 2, None, 1, 1]
        a_st, b_st = Store.open(out), Store.open(ref.out)
        for vid in ("a", "b", "c", "e"):
            (a, attrs_a), (b, attrs_b) = a_st.load(vid), b_st.load(vid)
            assert attrs_a == attrs_b and set(a) == set(b) and "tokens" in a
            for k in a:
                assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), (method, vid, k)
    # as with the local engine, the rerun skips what is done and tries the failed video again
    again = compress_ray.compress(CompressOptions(feats, "dyntok", out=out, seed=3, batch_size=2), quiet=True)
    assert (again.done, again.skipped, [f["id"] for f in again.failed]) == (0, 4, ["d_nan"])
