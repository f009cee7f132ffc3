"""The zarr store: atomic per-video commits, index, provenance checks."""

import contextlib
import json

import numpy as np
import pytest

import vtc.cache.index as ix
from vtc.cache import INDEX_FILE, Store, video_key
from vtc.cache.fs import LocalFS
from vtc.errors import VtcError

IDENT = {"encoder": {"model": "m", "layer": -1}, "sampling": {"frames": 8}}


def test_write_read_roundtrip(tmp_path):
    st = Store.create(tmp_path / "s.zarr", "features", IDENT)
    x = np.arange(2 * 3 * 4, dtype=np.float16).reshape(2, 3, 4)
    with st.writing():
        st.write("vid/1", {"features": x}, attrs={"decoder": "pyav"}, summary={"n_frames": 2})
    st2 = Store.open(tmp_path / "s.zarr", kind="features")
    arrays, attrs = st2.read("vid/1")
    np.testing.assert_array_equal(arrays["features"][...], x)
    assert arrays["features"].dtype == np.float16
    assert attrs["decoder"] == "pyav" and attrs["complete"] is True and attrs["id"] == "vid/1"
    assert st2.done()["vid/1"]["n_frames"] == 2


def test_different_identity_is_refused(tmp_path):
    Store.create(tmp_path / "s.zarr", "features", IDENT)
    other = {"encoder": {"model": "m", "layer": -2}, "sampling": {"frames": 8}}
    with pytest.raises(
        VtcError, match=r"different provenance \(encoder.layer: store has -1, this run has -2\)"
    ):
        Store.create(tmp_path / "s.zarr", "features", other)
    # same identity appends fine
    Store.create(tmp_path / "s.zarr", "features", json.loads(json.dumps(IDENT)))


def test_wrong_kind_and_not_a_store(tmp_path):
    Store.create(tmp_path / "s.zarr", "features", IDENT)
    with pytest.raises(VtcError, match="is a features store, expected a tokens store"):
        Store.open(tmp_path / "s.zarr", kind="tokens")
    with pytest.raises(VtcError, match="not a vtc store"):
        Store.open(tmp_path / "nothing.zarr")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(VtcError, match="exists and is not a vtc store"):
        Store.create(tmp_path / "junk", "features", IDENT)


def test_unindexed_group_is_not_done_and_gets_overwritten(tmp_path):
    """A run killed after writing arrays but before the index line leaves nothing that looks complete."""
    st = Store.create(tmp_path / "s.zarr", "features", IDENT)
    g = st._group.require_group("videos").create_group(video_key("a"))
    g.create_array("features", shape=(1,), dtype="float32")
    assert not Store.open(tmp_path / "s.zarr").has("a")
    with pytest.raises(VtcError, match="not in"):
        Store.open(tmp_path / "s.zarr").read("a")
    st.write("a", {"features": np.ones((2, 2), np.float32)}, attrs={})
    arrays, _ = Store.open(tmp_path / "s.zarr").read("a")
    assert arrays["features"].shape == (2, 2)


def test_torn_index_line_is_ignored_and_next_append_is_clean(tmp_path):
    st = Store.create(tmp_path / "s.zarr", "features", IDENT)
    st.write("a", {"x": np.zeros(3)}, attrs={})
    with open(tmp_path / "s.zarr" / INDEX_FILE, "a") as f:
        f.write('{"id": "b", "status": "do')  # killed mid-append
    st2 = Store.open(tmp_path / "s.zarr")
    assert set(st2.entries()) == {"a"}
    st2.write("b", {"x": np.zeros(3)}, attrs={})
    assert set(Store.open(tmp_path / "s.zarr").done()) == {"a", "b"}


def test_failure_then_success_last_entry_wins(tmp_path):
    st = Store.create(tmp_path / "s.zarr", "features", IDENT)
    st.fail("a", "corrupt")
    assert Store.open(tmp_path / "s.zarr").failed()["a"]["reason"] == "corrupt"
    st.write("a", {"x": np.zeros(1)}, attrs={})
    st2 = Store.open(tmp_path / "s.zarr")
    assert "a" in st2.done() and "a" not in st2.failed()


def test_second_writer_is_refused(tmp_path):
    st = Store.create(tmp_path / "s.zarr", "features", IDENT)
    other = Store.open(tmp_path / "s.zarr")
    with st.writing():
        with pytest.raises(VtcError, match="being written by another process"):
            with other.writing():
                pass


def test_video_keys_are_safe_and_distinct():
    keys = {video_key(v) for v in ["a/b", "a_b", "a b", "../x", "é"]}
    assert len(keys) == 5
    assert all("/" not in k and not k.startswith(".") for k in keys)


def test_uncompressed_arrays_are_stored_raw(tmp_path):
    st = Store.create(tmp_path / "s.zarr", "features", IDENT)
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float16)
    st.write("a", {"features": x, "other": x}, attrs={}, uncompressed=("features",))
    arrays, _ = Store.open(tmp_path / "s.zarr").read("a")
    assert arrays["features"].compressors == () and arrays["other"].compressors != ()
    np.testing.assert_array_equal(arrays["features"][...], x)
    chunk = tmp_path / "s.zarr" / "videos" / video_key("a") / "features" / "c" / "0" / "0"
    assert chunk.stat().st_size == x.nbytes  # raw bytes on disk


# ----------------------------------------------------------------------------- the scalable index
def _entry(i: int) -> dict:
    """Commit number i of a synthetic history: 60 ids, overwritten often, done and failed mixed."""
    vid = f"v{(i * 7) % 60}"
    if i % 3:
        return {"id": vid, "key": video_key(vid), "status": "done", "n": i}
    return {"id": vid, "status": "failed", "reason": f"r{i}", "n": i}


def _expected(n: int) -> dict:
    out: dict = {}
    for i in range(n):
        out[_entry(i)["id"]] = _entry(i)
    return out


def _check(e):
    return None if "id" in e and "status" in e else "missing field"


@pytest.fixture
def small_index(monkeypatch):
    """Thresholds small enough that a few hundred commits compact and resize many times."""
    monkeypatch.setattr(ix, "BUCKET_TARGET", 4)
    monkeypatch.setattr(ix, "LOG_COMPACT_AT", 7)
    monkeypatch.setattr(ix, "PARTS_COMPACT_AT", 5)


def _strip(entries: dict) -> dict:
    return {k: {f: v for f, v in e.items() if f != "time"} for k, e in entries.items()}


def _commit(st: Store, i: int) -> None:
    e = _entry(i)
    st.commit(e) if e["status"] == "done" else st.fail(e["id"], e["reason"], n=e["n"])


def _write_store(path, n: int) -> Store:
    st = Store.create(path, "features", IDENT)
    with st.writing():
        for i in range(n):
            _commit(st, i)
    return st


def test_compaction_keeps_last_wins_order_and_the_log(small_index, tmp_path):
    _write_store(tmp_path / "s.zarr", 300)
    m = json.loads((tmp_path / "s.zarr" / ix.MANIFEST).read_text())
    assert m["buckets"] > 8 and m["log_lines"] > 280  # compacted, resized, a short tail left
    st = Store.open(tmp_path / "s.zarr")
    want = _expected(300)
    assert _strip(st.entries()) == want and list(st.entries()) == list(want)  # the log's first-seen order
    fresh = Store.open(tmp_path / "s.zarr")
    assert all(_strip({v: fresh.get(v)})[v] == e for v, e in want.items())
    assert set(fresh.done()) == {v for v, e in want.items() if e["status"] == "done"}
    # the log is today's file, whole: every commit once, in order
    lines = [json.loads(x) for x in (tmp_path / "s.zarr" / INDEX_FILE).read_text().splitlines()]
    assert [{k: v for k, v in x.items() if k != "time"} for x in lines] == [
        {k: v for k, v in _entry(i).items() if k != "key" or _entry(i)["status"] == "done"}
        for i in range(300)
    ]


def test_a_lookup_reads_one_bucket_and_no_listing(small_index, tmp_path, monkeypatch):
    _write_store(tmp_path / "s.zarr", 300)
    m = json.loads((tmp_path / "s.zarr" / ix.MANIFEST).read_text())
    log = (tmp_path / "s.zarr" / INDEX_FILE).read_text().splitlines()
    vid = next(v for v in _expected(300) if v not in {json.loads(x)["id"] for x in log[m["log_lines"] :]})
    reads, lists = [], []
    real_read, real_list = LocalFS.read, LocalFS.list
    monkeypatch.setattr(
        LocalFS, "read", lambda self, rel, offset=0: reads.append(rel) or real_read(self, rel, offset)
    )
    monkeypatch.setattr(LocalFS, "list", lambda self, rel: lists.append(rel) or real_list(self, rel))
    st = Store.open(tmp_path / "s.zarr")
    assert reads == [] and lists == []  # opening reads zarr.json (through zarr) and nothing of the index
    e = st.get(vid)
    bucket = f"{ix.TABLE_DIR}/{m['gen']}/{ix.bucket_of(vid, m['buckets']):06d}.jsonl"
    assert reads == [ix.MANIFEST, INDEX_FILE, bucket]  # the manifest, the log's tail, one bucket
    assert lists == [ix.PARTS_DIR]  # the writers with uncompacted parts: none here, no directory
    assert _strip({vid: e})[vid] == _expected(300)[vid]
    reads.clear()
    assert st.get("never seen") is None and not st.has("never seen")
    assert len([r for r in reads if r.startswith(ix.TABLE_DIR + "/")]) == 1
    with pytest.raises(VtcError, match="video 'never seen' is not in"):
        st.read("never seen")


def test_get_of_a_missing_id_in_an_empty_and_a_small_store(tmp_path):
    st = Store.create(tmp_path / "s.zarr", "features", IDENT)
    assert st.get("x") is None and st.get_many(["x", "y"]) == {}
    st.write("a", {"x": np.zeros(2)}, attrs={})
    st.fail("b", "corrupt")
    st2 = Store.open(tmp_path / "s.zarr")
    assert st2.get("x") is None and st2.get("b")["reason"] == "corrupt" and st2.get("a")["status"] == "done"
    assert list(st2.get_many(["b", "x", "a"])) == ["b", "a"]
    assert not (tmp_path / "s.zarr" / "index").exists()  # a small store has no table: today's layout


def test_get_many_reads_each_bucket_once(small_index, tmp_path):
    _write_store(tmp_path / "s.zarr", 300)
    want = _expected(300)
    ids = [f"v{i}" for i in range(70)]  # 60 known, 10 not
    got = Store.open(tmp_path / "s.zarr").get_many(ids)
    assert _strip(got) == {v: want[v] for v in ids if v in want} and list(got) == [
        v for v in ids if v in want
    ]


def test_a_legacy_store_reads_and_its_first_writer_compacts_it(small_index, tmp_path):
    """A store written before the table existed: index.jsonl only, longer than the threshold."""
    st = Store.create(tmp_path / "s.zarr", "features", IDENT)
    log = tmp_path / "s.zarr" / INDEX_FILE
    log.write_text("".join(json.dumps(_entry(i), sort_keys=True) + "\n" for i in range(200)))
    want = _expected(200)
    old = Store.open(tmp_path / "s.zarr")
    assert _strip(old.entries()) == want and _strip({"v14": old.get("v14")})["v14"] == want["v14"]
    assert not (tmp_path / "s.zarr" / "index").exists()  # reading never writes
    with st.writing():
        pass  # the session's start absorbs the long log
    assert json.loads((tmp_path / "s.zarr" / ix.MANIFEST).read_text())["log_lines"] == 200
    assert _strip(Store.open(tmp_path / "s.zarr").entries()) == want
    assert log.read_text().count("\n") == 200  # the log is kept as it was


def test_a_torn_log_line_after_compaction_is_numbered_in_the_whole_log(small_index, tmp_path, capsys):
    _write_store(tmp_path / "s.zarr", 100)
    log = tmp_path / "s.zarr" / INDEX_FILE
    n = log.read_text().count("\n")
    with open(log, "a") as f:
        f.write('{"id": "v1", "status": "do')  # killed mid-append
    capsys.readouterr()
    st = Store.open(tmp_path / "s.zarr")
    assert _strip(st.entries()) == _expected(100)
    assert f"{INDEX_FILE}: skipped line {n + 1}: not JSON" in capsys.readouterr().err
    with st.writing():
        for i in range(100, 120):  # past the threshold: a compaction absorbs the torn line too
            _commit(st, i)
    assert json.loads((tmp_path / "s.zarr" / ix.MANIFEST).read_text())["log_lines"] > n + 1
    capsys.readouterr()
    assert _strip(Store.open(tmp_path / "s.zarr").entries()) == _expected(120)
    assert "warning" not in capsys.readouterr().err  # skipped once, when absorbed; the log keeps it
    assert '{"id": "v1", "status": "do\n' in log.read_text()


def test_a_torn_part_is_skipped_with_one_warning(tmp_path, capsys):
    idx = ix.Index(LocalFS(tmp_path), _check, log=False)
    idx.begin()
    for i in range(3):
        idx.append(_entry(i))
    part = tmp_path / ix.PARTS_DIR / idx.writer / "0000000099.jsonl"
    part.write_bytes(b'{"id": "v3", "sta')  # a foreign or half-copied object
    capsys.readouterr()
    assert ix.Index(LocalFS(tmp_path), _check, log=False).entries() == _expected(3)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "0000000099.jsonl: skipped line 1" in err
    idx.end()  # absorbs (and removes) the parts, the torn one included
    assert ix.Index(LocalFS(tmp_path), _check, log=False).entries() == _expected(3)
    assert not list((tmp_path / ix.PARTS_DIR).rglob("*.jsonl"))


@pytest.mark.parametrize("log", [True, False], ids=["log", "parts"])
@pytest.mark.parametrize("crash", ["bucket", "manifest", "remove", "rmtree"])
def test_a_crash_between_compaction_steps_reads_the_same(small_index, tmp_path, monkeypatch, log, crash):
    """Kill the compaction after one bucket, before the manifest, before removing parts, before removing
    the old generation: readers see the same entries, the next compaction finishes the job."""
    fs = LocalFS(tmp_path)
    idx = ix.Index(fs, _check, log=log)
    idx.begin()
    for i in range(40):
        idx.append(_entry(i))
    idx.autocompact = False
    for i in range(40, 46):
        idx.append(_entry(i))
    want = _expected(46)

    class Killed(Exception):
        pass

    real = {name: getattr(LocalFS, name) for name in ("write", "write_many")}

    def one_bucket_then_die(self, files):
        real["write_many"](self, dict([next(iter(files.items()))]))
        raise Killed

    def manifest_dies(self, rel, data):
        if rel == ix.MANIFEST:
            raise Killed
        real["write"](self, rel, data)

    def dies(self, rel=""):
        raise Killed

    patch = {"bucket": ("write_many", one_bucket_then_die), "manifest": ("write", manifest_dies)}
    name, fn = patch.get(crash, (crash, dies))
    monkeypatch.setattr(LocalFS, name, fn)
    with (
        pytest.raises(Killed)
        if crash in ("bucket", "manifest") or crash == "remove" and not log
        else _maybe()
    ):
        idx.compact()
    monkeypatch.undo()
    small_index_again(monkeypatch)
    assert ix.Index(fs, _check, log=log).entries() == want
    fresh = ix.Index(fs, _check, log=log)
    assert {v: fresh.get(v) for v in want} == want
    again = ix.Index(fs, _check, log=log)
    again.begin()
    again.compact()
    again.end()
    assert ix.Index(fs, _check, log=log).entries() == want
    assert len(fs.list(ix.TABLE_DIR)) == 1 and not list((tmp_path / ix.PARTS_DIR).rglob("*.jsonl"))


@contextlib.contextmanager
def _maybe():
    """A step that may not happen (no parts to remove in a log store, no old generation to drop)."""
    with contextlib.suppress(Exception):
        yield


def small_index_again(monkeypatch):
    monkeypatch.setattr(ix, "BUCKET_TARGET", 4)
    monkeypatch.setattr(ix, "LOG_COMPACT_AT", 7)
    monkeypatch.setattr(ix, "PARTS_COMPACT_AT", 5)


_WRITER = """
import sys
import vtc.cache.index as ix
from vtc.cache.fs import LocalFS
from tests.test_store import _check, _entry
ix.BUCKET_TARGET, ix.LOG_COMPACT_AT, ix.PARTS_COMPACT_AT = 4, 7, 5
fs = LocalFS(sys.argv[1])
idx = ix.Index(fs, _check, log=sys.argv[2] == "log")
with fs.exclusive("test store"):
    idx.begin()
    start = max((e["n"] for e in idx.entries().values()), default=-1) + 1
    print("ready", flush=True)
    for i in range(start, int(sys.argv[3])):
        idx.append(_entry(i))
    idx.end()
"""


@pytest.mark.parametrize("log,kills", [(True, 25), (False, 12)], ids=["log", "parts"])
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path, log, kills):
    """A writer that commits, compacts and resizes all the time, killed at random moments: after each
    kill the index reads exactly the commits made so far, and the last run finishes the history."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    rng = random.Random(1)
    root = str(Path(__file__).resolve().parents[1])
    args = [sys.executable, "-c", _WRITER, str(tmp_path), "log" if log else "parts"]
    landed = 0
    for _ in range(kills):
        p = subprocess.Popen(
            [*args, "100000"], stdout=subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": root}
        )
        assert p.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.15))
        p.send_signal(signal.SIGKILL)
        p.wait()
        got = ix.Index(LocalFS(tmp_path), _check, log=log).entries()
        n = max(e["n"] for e in got.values()) + 1 if got else 0
        assert got == _expected(n)
        landed += n > 0
    assert landed >= kills // 2
    r = subprocess.run(
        [*args, str(n + 50)], capture_output=True, cwd=root, env={**os.environ, "PYTHONPATH": root}
    )
    assert r.returncode == 0, r.stderr
    assert ix.Index(LocalFS(tmp_path), _check, log=log).entries() == _expected(n + 50)
    if log:  # every commit once, in order, whatever the kills: the log reads as one uninterrupted run
        lines = [json.loads(x) for x in (tmp_path / INDEX_FILE).read_bytes().split(b"\n") if x.strip()]
        assert [x for x in lines if "n" in x] == [_entry(i) for i in range(n + 50)]


def test_a_damaged_manifest_falls_back_to_the_whole_log(small_index, tmp_path, capsys):
    """Locally the table is derived from index.jsonl: a damaged manifest costs a full read, not data."""
    st = _write_store(tmp_path / "s.zarr", 100)
    manifest = tmp_path / "s.zarr" / ix.MANIFEST
    manifest.write_text(manifest.read_text()[:20])
    capsys.readouterr()
    fresh = Store.open(tmp_path / "s.zarr")
    assert (
        _strip(fresh.entries()) == _expected(100)
        and _strip({"v7": fresh.get("v7")})["v7"] == _expected(100)["v7"]
    )
    assert "table.json is damaged; reading the whole index.jsonl instead" in capsys.readouterr().err
    with st.writing():
        pass  # the next writer rebuilds the table from the log
    assert json.loads(manifest.read_text())["log_lines"] == 100
    assert _strip(Store.open(tmp_path / "s.zarr").entries()) == _expected(100)
