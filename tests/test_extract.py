"""`vtc extract` as a stage: the store it writes, resume, bad inputs, provenance, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.videos import make_audio_only, make_corrupt, make_empty, make_truncated
from vtc.cache import INDEX_FILE, Store
from vtc.errors import VtcError
from vtc.stages.demo import synth_video
from vtc.stages.extract import ExtractOptions, extract


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    for i in range(3):
        synth_video(d / f"clip{i}.mp4", n_frames=12 + 4 * i, seed=i + 1)
    return d


def test_extract_writes_features_and_metadata(videos, tiny_ckpt, tmp_path):
    s = extract(
        ExtractOptions([str(videos)], tmp_path / "f.zarr", model=str(tiny_ckpt["llava_ov"]), frames=4),
        quiet=True,
    )
    assert (s.done, s.skipped, s.failed, s.frames) == (3, 0, [], 12)
    st = Store.open(tmp_path / "f.zarr", kind="features")
    assert sorted(st.done()) == ["clip0", "clip1", "clip2"]
    arrays, attrs = st.read("clip1")
    assert arrays["features"].shape == (4, 729, 32) and arrays["features"].dtype == np.float16
    # 16 frames, 4 sampled uniformly as LLaVA-OV does: linspace(0, 15, 4).astype(int)
    np.testing.assert_array_equal(arrays["frame_indices"][...], [0, 5, 10, 15])
    np.testing.assert_allclose(arrays["timestamps"][...], np.array([0, 5, 10, 15]) / 8.0)
    assert attrs["decoder"] == "decord" and attrs["total_frames"] == 16
    assert attrs["source"] == str((videos / "clip1.mp4").resolve())
    assert set(attrs["fingerprint"]) >= {"size", "mtime_ns"}
    ident = st.meta["identity"]
    assert ident["encoder"]["layer"] == -1 and ident["encoder"]["grid"] == [27, 27]
    assert ident["sampling"]["frames"] == 4 and ident["storage_dtype"] == "float16"
    assert st.meta["versions"]["torch"] != "absent"
    # features equal the tower's output on the same frames (through fp16 storage)
    from vtc.encoders.vision import VisionEncoder
    from vtc.video import SamplingPolicy, decode_video

    dec = decode_video(videos / "clip1.mp4", SamplingPolicy(frames=4))
    ref = VisionEncoder(str(tiny_ckpt["llava_ov"])).encode(dec.frames).numpy().astype(np.float16)
    np.testing.assert_array_equal(arrays["features"][...], ref)


def test_rerun_skips_done_and_refuses_other_provenance(videos, tiny_ckpt, tmp_path):
    kw = {"model": str(tiny_ckpt["llava_ov"])}
    extract(ExtractOptions([str(videos / "clip0.mp4")], tmp_path / "f.zarr", frames=4, **kw), quiet=True)
    s = extract(ExtractOptions([str(videos)], tmp_path / "f.zarr", frames=4, **kw), quiet=True)
    assert (s.done, s.skipped) == (2, 1)
    lines = (tmp_path / "f.zarr" / INDEX_FILE).read_text().splitlines()
    assert len(lines) == 3  # nothing written twice
    with pytest.raises(
        VtcError, match=r"different provenance \(sampling.frames: store has 4, this run has 6\)"
    ):
        extract(ExtractOptions([str(videos)], tmp_path / "f.zarr", frames=6, **kw), quiet=True)
    with pytest.raises(VtcError, match="different provenance"):
        extract(
            ExtractOptions([str(videos)], tmp_path / "f.zarr", frames=4, storage_dtype="float32", **kw),
            quiet=True,
        )


def test_changed_file_is_extracted_again(videos, tiny_ckpt, tmp_path):
    v = tmp_path / "v.mp4"
    synth_video(v, n_frames=12, seed=1)
    kw = {"model": str(tiny_ckpt["llava_ov"]), "frames": 4}
    extract(ExtractOptions([str(v)], tmp_path / "f.zarr", **kw), quiet=True)
    synth_video(v, n_frames=20, seed=2)
    s = extract(ExtractOptions([str(v)], tmp_path / "f.zarr", **kw), quiet=True)
    assert (s.done, s.skipped) == (1, 0)
    assert Store.open(tmp_path / "f.zarr").read("v")[1]["total_frames"] == 20


def test_bad_inputs_are_recorded_and_skipped(videos, tiny_ckpt, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    make_corrupt(bad / "corrupt.mp4")
    make_empty(bad / "empty.mp4")
    make_truncated(videos / "clip2.mp4", bad / "truncated.mp4", keep_fraction=0.05)
    make_audio_only(bad / "audio.mp4")
    inputs = [str(videos / "clip0.mp4"), str(bad), str(tmp_path / "missing.mp4")]
    s = extract(
        ExtractOptions(inputs, tmp_path / "f.zarr", model=str(tiny_ckpt["llava_ov"]), frames=4), quiet=True
    )
    failed = {f["id"]: f["reason"] for f in s.failed}
    assert s.done == 1
    assert set(failed) == {"corrupt", "empty", "truncated", "audio", "missing"}
    assert all(r and "\n" not in r for r in failed.values())
    st = Store.open(tmp_path / "f.zarr")
    assert set(st.failed()) == set(failed) and set(st.done()) == {"clip0"}
    assert st.failed()["missing"]["source"].endswith("missing.mp4")


def test_hanging_and_crashing_decoders_cost_one_video_each(videos, tiny_ckpt, tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    for name in ("a_ok", "b_hang", "c_crash", "d_ok"):
        (d / f"{name}.mp4").write_bytes((videos / "clip0.mp4").read_bytes())
    t0 = time.time()
    s = extract(
        ExtractOptions([str(d)], tmp_path / "f.zarr", model=str(tiny_ckpt["llava_ov"]), frames=4, timeout=3),
        quiet=True,
        _decode_fn="tests.videos:faulty_decode",
    )
    assert time.time() - t0 < 60
    assert s.done == 2
    reasons = {f["id"]: f["reason"] for f in s.failed}
    assert reasons["b_hang"] == "decode timed out after 3s"
    assert reasons["c_crash"].startswith("decoder crashed")
    assert set(Store.open(tmp_path / "f.zarr").done()) == {"a_ok", "d_ok"}


def test_bad_options_are_one_line_errors(videos, tiny_ckpt, tmp_path):
    kw = {"model": str(tiny_ckpt["llava_ov"])}
    with pytest.raises(VtcError, match="storage dtype"):
        extract(
            ExtractOptions([str(videos)], tmp_path / "a.zarr", storage_dtype="bfloat16", **kw), quiet=True
        )
    with pytest.raises(VtcError, match="backend 'nope'"):
        extract(ExtractOptions([str(videos)], tmp_path / "a.zarr", backend="nope", **kw), quiet=True)
    with pytest.raises(VtcError, match="cannot load model config"):
        extract(ExtractOptions([str(videos)], tmp_path / "a.zarr", model=str(tmp_path / "no-model")))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(VtcError, match="no input videos"):
        extract(ExtractOptions([str(tmp_path / "emptydir")], tmp_path / "a.zarr", **kw), quiet=True)


def test_pyav_backend_and_fps_sampling(videos, tiny_ckpt, tmp_path):
    s = extract(
        ExtractOptions(
            [str(videos / "clip2.mp4")],
            tmp_path / "f.zarr",
            model=str(tiny_ckpt["llava_ov"]),
            backend="pyav",
            fps=2.0,
            max_frames=64,
        ),
        quiet=True,
    )
    arrays, attrs = Store.open(tmp_path / "f.zarr").read("clip2")
    # 20 frames at 8 fps = 2.5 s; 2 frames per second -> t = 0, 0.5, 1.0, 1.5, 2.0
    assert s.frames == 5 and attrs["decoder"] == "pyav"
    np.testing.assert_array_equal(arrays["frame_indices"][...], [0, 4, 8, 12, 16])


@pytest.mark.slow
def test_kill_9_then_resume_completes_without_duplicates(tiny_ckpt, tmp_path):
    vids = tmp_path / "v"
    vids.mkdir()
    for i in range(8):
        synth_video(vids / f"k{i}.mp4", n_frames=16, seed=i + 1)
    store = tmp_path / "f.zarr"
    cmd = [
        sys.executable,
        "-m",
        "vtc",
        "extract",
        str(vids),
        "--store",
        str(store),
        "--model",
        str(tiny_ckpt["llava_ov"]),
        "--frames",
        "8",
        "--quiet",
    ]
    p = subprocess.Popen(cmd, start_new_session=True)
    index = store / INDEX_FILE
    deadline = time.time() + 60
    while time.time() < deadline:  # kill as soon as the first video is committed
        if index.exists() and index.read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    first = Store.open(store).done()
    assert 1 <= len(first) < 8, "the kill should land mid-run"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    st = Store.open(store)
    assert sorted(st.done()) == [f"k{i}" for i in range(8)]
    lines = [json.loads(x) for x in index.read_text().splitlines() if x.strip()]
    assert len(lines) == 8 and len({e["id"] for e in lines}) == 8  # no duplicate commits
    # every video's data is complete and identical to a clean run
    clean = extract(
        ExtractOptions([str(vids)], tmp_path / "clean.zarr", model=str(tiny_ckpt["llava_ov"]), frames=8),
        quiet=True,
    )
    assert clean.done == 8
    ref = Store.open(tmp_path / "clean.zarr")
    for vid in st.done():
        np.testing.assert_array_equal(st.read(vid)[0]["features"][...], ref.read(vid)[0]["features"][...])


def _index_lines(store) -> list[dict]:
    """The store's index lines in order, without their wall-clock times."""
    lines = (store / INDEX_FILE).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def test_the_store_is_the_same_whatever_the_number_of_decode_workers(videos, tiny_ckpt, tmp_path):
    """--workers N: N decode processes, the results written in input order: the same index lines (but
    times) and byte-identical arrays for N = 1, 2, 3, with failures (a hang, a crash, a corrupt file) in
    the mix, whichever decode finishes first."""
    d = tmp_path / "v"
    d.mkdir()
    for i in range(3):
        (d / f"a{i}_ok.mp4").write_bytes((videos / f"clip{i}.mp4").read_bytes())
    for name in ("b_hang", "c_crash"):
        (d / f"{name}.mp4").write_bytes((videos / "clip0.mp4").read_bytes())
    make_corrupt(d / "e_corrupt.mp4")
    stores = {}
    for n in (1, 2, 3):
        stores[n] = tmp_path / f"w{n}.zarr"
        s = extract(
            ExtractOptions(
                [str(d)], stores[n], model=str(tiny_ckpt["llava_ov"]), frames=4, timeout=3, workers=n
            ),
            quiet=True,
            _decode_fn="tests.videos:faulty_decode",
        )
        assert (s.workers, s.done, len(s.failed)) == (n, 3, 3)
    ref = _index_lines(stores[1])
    assert [line["status"] for line in ref] == ["done"] * 3 + ["failed"] * 3
    one = Store.open(stores[1])
    for n in (2, 3):
        assert _index_lines(stores[n]) == ref
        other = Store.open(stores[n])
        for vid in one.done():
            (a, attrs_a), (b, attrs_b) = one.load(vid), other.load(vid)
            assert attrs_a == attrs_b and set(a) == set(b)
            assert all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)
    with pytest.raises(VtcError, match="--workers must be >= 1"):
        extract(ExtractOptions([str(d)], tmp_path / "z.zarr", model=str(tiny_ckpt["llava_ov"]), workers=0))
    assert not (tmp_path / "z.zarr").exists()


class _FrameEcho:
    """A stand-in tower whose features are each frame's first pixels: it shows which frames a video got
    back, and records the batch sizes it was given."""

    frames_independent = True

    def __init__(self):
        self.batches: list[int] = []

    def encode(self, frames, batch_size=16, attention=False):
        import torch

        assert len(frames) <= batch_size
        self.batches.append(len(frames))
        f = torch.from_numpy(frames.reshape(len(frames), -1, 3)[:, :4].astype(np.float32))
        return (f, f[..., 0]) if attention else f

    def video_grid(self, shape):
        return (2, 2)


@pytest.mark.parametrize("attention", [False, True])
def test_tower_batches_fill_across_videos_and_each_video_gets_its_own_frames(videos, tmp_path, attention):
    from vtc.stages.extract import encode_stream
    from vtc.video import SamplingPolicy, VideoError, decode_video

    clips = [videos / f"clip{i}.mp4" for i in range(3)]
    decoded = [
        decode_video(p, SamplingPolicy(frames=n), size=(8, 8)) for p, n in zip(clips, (5, 7, 3), strict=True)
    ]
    items = [("a", clips[0], decoded[0]), ("bad", tmp_path / "x.mp4", VideoError("cannot open"))]
    items += [("b", clips[1], decoded[1]), ("c", clips[2], decoded[2])]
    tower = _FrameEcho()
    opt = ExtractOptions([], tmp_path / "s.zarr", batch_size=4, save_attention=attention)
    out = list(encode_stream(tower, iter(items), opt))
    assert [k for k, _, _ in out] == ["a", "bad", "b", "c"]  # input order, the failure in its place
    assert tower.batches == [4, 4, 4, 3]  # 15 frames: full batches across videos, one short at the end
    assert out[1][2] == "cannot open"
    for (_, _, rec), dec in zip([out[0], out[2], out[3]], decoded, strict=True):
        want = dec.frames.reshape(len(dec.frames), -1, 3)[:, :4].astype(np.float16)
        np.testing.assert_array_equal(rec.arrays["features"], want)
        assert rec.n_frames == len(dec.frames)
        if attention:
            np.testing.assert_array_equal(rec.arrays["attention"], want[..., 0].astype(np.float32))
        else:
            assert "attention" not in rec.arrays


def test_the_tiny_tower_gives_the_same_bytes_per_frame_whatever_the_batch(videos, tiny_ckpt):
    """Why filling batches across videos leaves the store as it was: on CPU a frame's features do not
    depend on the other frames of its batch (fp16 storage, as stored)."""
    from vtc.encoders.vision import VisionEncoder
    from vtc.video import SamplingPolicy, decode_video

    enc = VisionEncoder(str(tiny_ckpt["llava_ov"]))
    a, b = (decode_video(videos / f"clip{i}.mp4", SamplingPolicy(frames=6)).frames for i in (0, 1))
    alone = enc.encode(a, batch_size=6).numpy().astype(np.float16)
    mixed = enc.encode(np.concatenate([b[:3], a, b[3:]]), batch_size=12).numpy().astype(np.float16)
    assert alone.tobytes() == mixed[3:9].tobytes()


def test_the_writer_thread_keeps_order_and_raises_its_error_in_the_caller():
    from vtc.stages.extract import _Writer

    done = []
    with _Writer(depth=1) as w:
        for i in range(5):
            w.submit(done.append, i)
    assert done == [0, 1, 2, 3, 4]

    def boom():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), _Writer() as w:
        w.submit(boom)
        w.submit(done.append, "after")  # not written once a write failed: the index keeps its order
    assert "after" not in done
