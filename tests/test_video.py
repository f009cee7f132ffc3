"""vtc.video: sampling indices, both decoders on synthetic videos, bad inputs, damaged files, the worker."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.videos import (
    frame_ids,
    make_audio_only,
    make_corrupt,
    make_empty,
    make_no_frames,
    make_truncated,
    make_video,
)
from vtc.video import (
    DecodedVideo,
    DecodePool,
    DecodeWorker,
    SamplingPolicy,
    VideoError,
    decode_video,
    fingerprint,
    list_backends,
)
from vtc.video import worker as worker_mod

BACKENDS = ["decord", "pyav"]
HOOK = "tests.videos:faulty_decode"  # hangs on *hang*, segfaults on *crash*, else decode_video


def _fps(fps, max_frames=64):
    return SamplingPolicy(frames=None, fps=fps, max_frames=max_frames)


# --- sampling ------------------------------------------------------------------------------------------


def test_frames_mode_hand_checked():
    assert SamplingPolicy(frames=4).indices(10, 8.0).tolist() == [0, 3, 6, 9]
    assert SamplingPolicy(frames=8).indices(16, 8.0).tolist() == [0, 2, 4, 6, 8, 10, 12, 15]
    assert SamplingPolicy(frames=6).indices(24, 30.0).tolist() == [0, 4, 9, 13, 18, 23]
    # video_fps does not matter in frames mode
    three = SamplingPolicy(frames=3)
    assert three.indices(7, 1.0).tolist() == three.indices(7, 60.0).tolist() == [0, 3, 6]
    idx = SamplingPolicy(frames=32).indices(1000, 25.0)
    assert idx.dtype == np.int64 and idx[0] == 0 and idx[-1] == 999 and len(idx) == 32


def test_frames_mode_fewer_frames_than_asked_repeats_indices():
    # LLaVA-OV's linspace gives repeats when the video is shorter than N; kept so every video has N frames
    assert SamplingPolicy(frames=5).indices(3, 8.0).tolist() == [0, 0, 1, 1, 2]
    assert SamplingPolicy(frames=4).indices(1, 8.0).tolist() == [0, 0, 0, 0]
    assert SamplingPolicy(frames=4).indices(0, 8.0).tolist() == []


def test_fps_mode_hand_checked():
    # 16 frames at 8 fps = 2 s: t = 0, 0.5, 1, 1.5 -> frames 0, 4, 8, 12
    assert _fps(2).indices(16, 8.0).tolist() == [0, 4, 8, 12]
    # t = k/3 s -> 8k/3 = 0, 2.67, 5.33, 8, 10.67, 13.33 -> nearest frame
    assert _fps(3).indices(16, 8.0).tolist() == [0, 3, 5, 8, 11, 13]
    # 25 fps at 2 fps: 12.5 and 37.5 round half up
    assert _fps(2).indices(100, 25.0).tolist() == [0, 13, 25, 38, 50, 63, 75, 88]
    # NTSC: 90 frames = 3.003 s, t = 0..3 s; t = 3 s is frame 89.91 -> 90, past the end -> last frame
    assert _fps(1).indices(90, 29.97).tolist() == [0, 30, 60, 89]
    # sampling faster than the video repeats frames (the frame on screen at each t)
    assert _fps(4).indices(4, 2.0).tolist() == [0, 1, 1, 2, 2, 3, 3, 3]
    assert _fps(1).indices(1, 25.0).tolist() == [0]


def test_fps_mode_cap_resamples_uniformly():
    # 1000 frames at 25 fps = 40 s; 2 fps would be 80 frames > 16 -> 16 uniform over the whole video
    idx = _fps(2, max_frames=16).indices(1000, 25.0)
    assert idx.tolist() == np.linspace(0, 999, 16, dtype=int).tolist()
    assert idx[-1] == 999
    # exactly at the cap: not resampled
    assert _fps(2, max_frames=4).indices(16, 8.0).tolist() == [0, 4, 8, 12]
    assert _fps(2, max_frames=3).indices(16, 8.0).tolist() == [0, 7, 15]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"frames": 8, "fps": 2.0}, "exactly one of frames or fps"),
        ({"fps": 2.0}, "exactly one of frames or fps"),  # frames defaults to 32
        ({"frames": None}, "exactly one of frames or fps"),
        ({"frames": 0}, "frames must be a positive integer"),
        ({"frames": 2.5}, "frames must be a positive integer"),
        ({"frames": True}, "frames must be a positive integer"),
        ({"frames": None, "fps": 0}, "fps must be a positive number"),
        ({"frames": None, "fps": float("nan")}, "fps must be a positive number"),
        ({"frames": None, "fps": 1.0, "max_frames": 0}, "max_frames must be a positive integer"),
    ],
)
def test_policy_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingPolicy(**kwargs)


def test_policy_dict_round_trip():
    for p in (SamplingPolicy(frames=32), _fps(2.0, max_frames=48), _fps(0.5)):
        d = json.loads(json.dumps(p.to_dict()))
        assert SamplingPolicy.from_dict(d) == p
    assert SamplingPolicy(frames=32).to_dict() == {"frames": 32}  # max_frames is irrelevant there
    assert SamplingPolicy(frames=32, max_frames=10).to_dict() == SamplingPolicy(frames=32).to_dict()
    assert _fps(2.0).to_dict() == {"fps": 2.0, "max_frames": 64}
    assert SamplingPolicy.from_dict({"fps": 1}) == _fps(1.0)
    with pytest.raises(ValueError, match="unknown sampling keys: stride"):
        SamplingPolicy.from_dict({"frames": 8, "stride": 2})


# --- decoding good videos ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "mp4": make_video(d / "v.mp4", n_frames=24),
        "avi": make_video(d / "v.avi", n_frames=24),
        "mkv": make_video(d / "v.mkv", n_frames=24),  # Matroska stores no frame count in its header
        "h264": make_video(d / "h.mp4", n_frames=24, codec="libx264"),
        "noise": make_video(d / "n.mp4", n_frames=40, codec="libx264", pattern="noise", size=(96, 64)),
        "dir": d,
    }


def test_list_backends_here():
    assert list_backends() == ["decord", "pyav"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["mp4", "avi", "mkv", "h264"])
def test_decode_samples_the_right_frames(vids, backend, kind):
    v = decode_video(vids[kind], SamplingPolicy(frames=6), backend=backend, size=None)
    assert isinstance(v, DecodedVideo) and v.backend == backend
    assert v.total_frames == 24 and v.fps == 8.0 and v.duration == 3.0
    assert v.frame_indices.dtype == np.int64 and v.frame_indices.tolist() == [0, 4, 9, 13, 18, 23]
    assert v.frames.dtype == np.uint8 and v.frames.shape == (6, 48, 64, 3)
    # the pattern says which source frame each one is
    assert frame_ids(v.frames).tolist() == [0, 4, 9, 13, 18, 23]
    assert v.timestamps.dtype == np.float64 and np.allclose(v.timestamps, np.array([0, 4, 9, 13, 18, 23]) / 8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_resizes_and_samples_by_time(vids, backend):
    v = decode_video(vids["h264"], _fps(2.0), backend=backend, size=(384, 256))
    assert v.frames.shape == (6, 256, 384, 3)  # size is (W, H)
    assert v.frame_indices.tolist() == [0, 4, 8, 12, 16, 20]
    assert frame_ids(v.frames).tolist() == [0, 4, 8, 12, 16, 20]
    assert np.allclose(v.timestamps, [0, 0.5, 1, 1.5, 2, 2.5])


def test_decode_av1_if_encoder_available(tmp_path):
    import av

    if "libsvtav1" not in av.codecs_available:
        pytest.skip("no AV1 encoder in this PyAV")
    p = make_video(tmp_path / "a.mp4", n_frames=12, size=(64, 64), codec="libsvtav1")
    for backend in BACKENDS:  # decord2 reads AV1 (decord 0.6 did not)
        v = decode_video(p, SamplingPolicy(frames=4), backend=backend, size=None)
        assert v.total_frames == 12 and frame_ids(v.frames).tolist() == [0, 3, 7, 11]


@pytest.mark.parametrize("policy", [SamplingPolicy(frames=8), _fps(3.0), SamplingPolicy(frames=64)])
def test_backends_agree(vids, policy):
    a = decode_video(vids["noise"], policy, backend="decord")
    b = decode_video(vids["noise"], policy, backend="pyav")
    assert a.frame_indices.tolist() == b.frame_indices.tolist()
    assert np.array_equal(a.timestamps, b.timestamps)
    assert (a.total_frames, a.fps, a.duration) == (b.total_frames, b.fps, b.duration) == (40, 8.0, 5.0)
    assert a.frames.shape == b.frames.shape == (len(a.frame_indices), 384, 384, 3)
    # both convert YUV -> RGB with FFmpeg's swscale and resize with PIL: identical here; allow a little
    assert np.abs(a.frames.astype(np.int16) - b.frames).mean() < 1.0


# --- bad inputs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bad(tmp_path_factory, vids):
    d = tmp_path_factory.mktemp("bad")
    return {
        "missing": (d / "nope.mp4", "file not found"),
        "directory": (d, "not a regular file"),
        "empty": (make_empty(d / "empty.mp4"), "empty file (0 bytes)"),
        "corrupt": (make_corrupt(d / "corrupt.mp4"), "cannot open as a video"),
        # an .mp4 keeps its index (moov) at the end: cut that off and nothing opens
        "truncated": (make_truncated(vids["mp4"], d / "cut.mp4", 0.5), "cannot open as a video"),
        "audio-only": (make_audio_only(d / "sound.m4a"), "no video stream (audio-only file)"),
        "no-frames": (make_no_frames(d / "none.avi"), "video stream decodes to 0 frames"),
    }


BAD_CASES = ["missing", "directory", "empty", "corrupt", "truncated", "audio-only", "no-frames"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_line_video_error(bad, backend, case):
    path, message = bad[case]
    with pytest.raises(VideoError) as e:
        decode_video(path, SamplingPolicy(frames=4), backend=backend)
    assert message in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_caller_errors_are_value_errors(vids):
    with pytest.raises(ValueError, match="unknown decoder backend 'opencv'"):
        decode_video(vids["mp4"], SamplingPolicy(frames=4), backend="opencv")
    with pytest.raises(ValueError, match="size must be"):
        decode_video(vids["mp4"], SamplingPolicy(frames=4), size=(0, 10))


# --- damaged files: trust the frames that decode, not the header -----------------------------------------


def test_header_overstates_what_decodes_avi(vids, tmp_path):
    import av

    src = make_video(tmp_path / "long.avi", n_frames=64)
    cut = make_truncated(src, tmp_path / "cut.avi", 0.5)
    with av.open(str(cut)) as c:
        assert c.streams.video[0].frames == 64  # the AVI header still claims every frame
    got = [decode_video(cut, SamplingPolicy(frames=8), backend=b, size=None) for b in BACKENDS]
    # pinned (PyAV 18.1 / decord2 3.4, MPEG-4 at 2 Mb/s): 18 frames are left, for both backends
    assert [v.total_frames for v in got] == [18, 18]
    assert got[0].frame_indices.tolist() == got[1].frame_indices.tolist() == [0, 2, 4, 7, 9, 12, 14, 17]
    assert got[0].duration == 18 / 8
    for v in got:
        ids = frame_ids(v.frames)
        assert ids[:-1].tolist() == v.frame_indices[:-1].tolist()
        # frame 17's packet is cut short; FFmpeg conceals it with what it has (mostly frame 16)
        assert ids[-1] in (16, 17)


@pytest.fixture(scope="session")
def cut_h264(tmp_path_factory):
    """64 H.264 frames, index first (faststart), the second half of the bytes cut off."""
    d = tmp_path_factory.mktemp("cut")
    src = make_video(d / "long.mp4", n_frames=64, codec="libx264", faststart=True)
    return make_truncated(src, d / "cut.mp4", 0.5)


def test_decord_count_overstates_what_decodes(cut_h264):
    import av
    import decord

    with av.open(str(cut_h264)) as c:
        assert c.streams.video[0].frames == 64  # header
    assert len(decord.VideoReader(str(cut_h264))) == 23  # decord's packet index: one more than decodes
    d = decode_video(cut_h264, SamplingPolicy(frames=8), backend="decord", size=None)
    p = decode_video(cut_h264, SamplingPolicy(frames=8), backend="pyav", size=None)
    assert d.total_frames == p.total_frames == 22
    assert d.frame_indices.tolist() == p.frame_indices.tolist() == [0, 3, 6, 9, 12, 15, 18, 21]
    assert frame_ids(d.frames).tolist() == d.frame_indices.tolist()
    assert np.array_equal(d.frames, p.frames)
    # decord's own re-reads of a damaged file are not deterministic, so PyAV decoded it (and says so)
    assert d.backend == "pyav"


def test_decord_only_fallback_without_pyav(cut_h264, monkeypatch):
    """Where PyAV does not import, decord counts by reading straight through and re-samples itself."""
    monkeypatch.setitem(sys.modules, "av", None)
    v = decode_video(cut_h264, SamplingPolicy(frames=8), backend="decord", size=None)
    assert v.backend == "decord"
    # decord's reads stop at a varying frame near the damage: never more than really decode
    assert 1 <= v.total_frames <= 22
    assert v.frame_indices.tolist() == SamplingPolicy(frames=8).indices(v.total_frames, 8.0).tolist()
    assert frame_ids(v.frames).tolist() == v.frame_indices.tolist()


def test_short_decord_batch_is_not_trusted(vids, monkeypatch):
    """A get_batch that returns fewer frames than asked sends the video down the damaged-file path."""
    import decord

    real = decord.VideoReader.get_batch
    monkeypatch.setattr(decord.VideoReader, "get_batch", lambda self, idx: real(self, list(idx)[:-1]))
    v = decode_video(vids["h264"], SamplingPolicy(frames=6), backend="decord", size=None)
    assert v.backend == "pyav" and v.total_frames == 24
    assert frame_ids(v.frames).tolist() == [0, 4, 9, 13, 18, 23]


# --- fingerprint ---------------------------------------------------------------------------------------


def test_fingerprint(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"a" * 1000)
    fp = fingerprint(p)
    assert set(fp) == {"size", "mtime_ns", "head_sha1"} and fp["size"] == 1000
    assert fingerprint(p) == fp and json.loads(json.dumps(fp)) == fp
    st = os.stat(p)
    p.write_bytes(b"a" * 999 + b"b")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the hash can tell
    assert fingerprint(p)["head_sha1"] != fp["head_sha1"]
    # big file: first and last MiB are hashed, the middle is not (cheap by design)
    big = tmp_path / "big.bin"
    data = bytearray(3 << 20)
    big.write_bytes(bytes(data))
    h0 = fingerprint(big)["head_sha1"]
    data[(3 << 20) // 2] = 1
    big.write_bytes(bytes(data))
    assert fingerprint(big)["head_sha1"] == h0
    data[-1] = 1
    big.write_bytes(bytes(data))
    assert fingerprint(big)["head_sha1"] != h0
    with pytest.raises(OSError):
        fingerprint(tmp_path / "missing.mp4")


# --- the worker ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return [make_video(d / f"clip{i}.mp4", n_frames=8 + 4 * i) for i in range(4)]


def test_worker_yields_in_input_order(clips, bad):
    paths = [clips[0], bad["corrupt"][0], clips[1], clips[2], bad["missing"][0], clips[3]]
    with DecodeWorker(SamplingPolicy(frames=4), size=(32, 32), prefetch=2) as w:
        out = list(w.imap(paths))
    assert [p for p, _ in out] == paths
    totals = [r.total_frames if isinstance(r, DecodedVideo) else str(r) for _, r in out]
    assert totals[0] == 8 and totals[2:4] == [12, 16] and totals[5] == 20
    assert "cannot open as a video" in totals[1] and totals[4] == "file not found"
    assert out[3][1].frames.shape == (4, 32, 32, 3)
    assert frame_ids(out[3][1].frames).tolist() == [0, 5, 10, 15]


def test_worker_survives_hang_and_crash(clips, tmp_path):
    hang = make_video(tmp_path / "hang.mp4", n_frames=8)
    crash = make_video(tmp_path / "crash.mp4", n_frames=8)
    paths = [clips[0], hang, clips[1], crash, clips[2]]
    t0 = time.monotonic()
    with DecodeWorker(SamplingPolicy(frames=4), size=(32, 32), timeout=2.0, _decode_fn=HOOK) as w:
        pid0 = w._proc.pid
        out = list(w.imap(paths))
        assert w._proc.pid != pid0  # replaced
    elapsed = time.monotonic() - t0
    assert [p for p, _ in out] == paths
    assert str(out[1][1]) == "decode timed out after 2s"
    assert str(out[3][1]) == "decoder crashed (exit code -11, SIGSEGV)"
    assert [out[i][1].total_frames for i in (0, 2, 4)] == [8, 12, 16]
    assert elapsed < 30  # one 2 s timeout and three child start-ups (about 0.5 s each), not a hang


def test_worker_without_timeout(clips):
    with DecodeWorker(SamplingPolicy(frames=2), backend="pyav", size=None, timeout=None, prefetch=0) as w:
        out = list(w.imap(clips[:2]))
    assert [r.total_frames for _, r in out] == [8, 12] and out[0][1].backend == "pyav"
    assert out[0][1].frames.shape == (2, 48, 64, 3)


def test_worker_blames_the_crash_on_the_right_video(clips, tmp_path):
    """The child decodes ahead; when it dies on a later video, a finished result still in flight is lost
    with it. That video is decoded again, not reported as crashed."""
    crash = make_video(tmp_path / "crash.mp4", n_frames=8)
    paths = [clips[0], clips[1], crash, clips[2]]
    out = []
    with DecodeWorker(SamplingPolicy(frames=32), size=(384, 384), prefetch=2, _decode_fn=HOOK) as w:
        for p, r in w.imap(paths):
            out.append((p, r))
            if len(out) == 1:
                time.sleep(1.5)  # meanwhile: clip1 decoded (14 MB, stuck in the pipe), then the crash
    assert [p for p, _ in out] == paths
    assert isinstance(out[1][1], DecodedVideo) and out[1][1].total_frames == 12
    assert isinstance(out[2][1], VideoError) and "crashed" in str(out[2][1])
    assert out[3][1].total_frames == 16


def test_worker_abandoned_imap_leaves_no_stale_results(clips):
    with DecodeWorker(SamplingPolicy(frames=2), size=(16, 16), prefetch=2) as w:
        for _p, _r in w.imap(clips):
            break
        out = list(w.imap(clips[2:]))
    assert [p for p, _ in out] == clips[2:]
    assert [r.total_frames for _, r in out] == [16, 20]


def _blocks() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("vtc_*")}


def test_big_frames_cross_in_shared_memory_and_no_block_outlives_its_video(clips, tmp_path):
    """Frames of 1 MiB and more come back through a shared-memory block, equal to an in-process decode;
    no block is left behind after a normal run, a crash, or an abandoned run."""
    crash = make_video(tmp_path / "crash.mp4", n_frames=8)
    before = _blocks()
    policy = SamplingPolicy(frames=8)
    with DecodePool(2, policy, size=(384, 384), _decode_fn=HOOK) as pool:
        out = list(pool.imap([clips[0], clips[1], crash, clips[2]]))
        assert out[0][1].frames.nbytes >= worker_mod._SHARED_MIN_BYTES
        for i in (0, 1, 3):
            want = decode_video(out[i][0], policy, size=(384, 384))
            np.testing.assert_array_equal(out[i][1].frames, want.frames)
            assert out[i][1].frames.flags.owndata  # a copy: the block is gone, the frames stay
        assert "crashed" in str(out[2][1])
        for _p, _r in pool.imap(clips):  # abandoned while both children have big results in flight
            time.sleep(1.0)
            break
    assert _blocks() == before


def test_worker_argument_errors():
    with pytest.raises(ValueError, match="unknown decoder backend"):
        DecodeWorker(SamplingPolicy(), backend="opencv")
    with pytest.raises(ValueError, match="timeout"):
        DecodeWorker(SamplingPolicy(), timeout=0)
    with pytest.raises(ValueError, match="threads"):
        DecodeWorker(SamplingPolicy(), threads=-1)
    with pytest.raises(ModuleNotFoundError):
        DecodeWorker(SamplingPolicy(), _decode_fn="tests.no_such_module:f")
    w = DecodeWorker(SamplingPolicy(frames=2))
    w.close()
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(w.imap(["x.mp4"]))


def test_pool_yields_in_input_order_across_its_workers(clips, bad, tmp_path):
    """DecodePool(3): video i on worker i mod 3, yielded in input order, a hang and a crash costing one
    video each; abandoned mid-way it returns at once though a worker is still inside a hanging decode."""
    hang = make_video(tmp_path / "hang.mp4", n_frames=8)
    crash = make_video(tmp_path / "crash.mp4", n_frames=8)
    paths = [clips[0], hang, clips[1], crash, bad["corrupt"][0], clips[2], clips[3]]
    with DecodePool(3, SamplingPolicy(frames=4), size=(32, 32), timeout=2.0, _decode_fn=HOOK) as pool:
        out = list(pool.imap(paths))
    assert [p for p, _ in out] == paths
    assert str(out[1][1]) == "decode timed out after 2s" and "crashed" in str(out[3][1])
    assert "cannot open as a video" in str(out[4][1])
    assert [out[i][1].total_frames for i in (0, 2, 5, 6)] == [8, 12, 16, 20]
    t0 = time.monotonic()
    with DecodePool(2, SamplingPolicy(frames=4), size=(32, 32), timeout=60.0, _decode_fn=HOOK) as pool:
        for _p, _r in pool.imap([clips[0], hang, clips[1]]):
            break
    assert time.monotonic() - t0 < 20  # not the 60 s the hanging decode would take
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        DecodePool(0, SamplingPolicy())
    with DecodePool(2, SamplingPolicy()) as pool:  # the cores shared out, not each worker taking all
        assert [w.threads for w in pool.workers] == [max(1, (os.cpu_count() or 1) // 2)] * 2


def test_blocks_of_a_run_killed_whole_are_swept_by_the_next(clips, tmp_path):
    """kill -9 of a whole process group takes the resource tracker too: blocks in flight stay behind, and
    the next DecodeWorker removes those whose owner is gone."""
    import signal
    import subprocess

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from vtc.video import DecodeWorker, SamplingPolicy\n"
        "if __name__ == '__main__':\n"
        "    w = DecodeWorker(SamplingPolicy(frames=8), size=(384, 384), prefetch=3)\n"
        "    for i, _ in enumerate(w.imap(sys.argv[1:])):\n"
        "        print('got', flush=True)\n"
        "        time.sleep(60)\n"
    )
    before = _blocks()
    p = subprocess.Popen(
        [sys.executable, str(script), *map(str, clips)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert p.stdout.readline().strip() == "got"
    time.sleep(1.0)  # the child decodes ahead: its blocks wait in the pipe
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)
    assert _blocks() - before  # left behind: nobody alive knows them
    DecodeWorker(SamplingPolicy(frames=2)).close()
    assert _blocks() == before
