"""The store on an object store (``s3://``), against moto's S3 server on loopback: the same store tests
as on a local path, plus the lease that replaces the flock there."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from vtc.cache import Store  # noqa: E402
from vtc.cache import index as ix  # noqa: E402
from vtc.cache import lease as lease_mod  # noqa: E402
from vtc.cache.fs import ObjectFS  # noqa: E402
from vtc.errors import VtcError  # noqa: E402

IDENT = {"encoder": {"model": "m", "layer": -1}, "sampling": {"frames": 8}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 (a free port), dummy credentials, and one bucket; yields a
    function giving a fresh ``s3://`` store URL per call."""
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir("vtc-test")
        n = iter(range(10**6))
        yield lambda: f"s3://vtc-test/run{next(n)}/s.zarr"
    server.stop()


def _objects(url: str) -> list[str]:
    fs = ObjectFS(url)
    return sorted(p[len(fs.base) + 1 :] for p in fs.fs.find(fs.base))


def test_write_read_load_roundtrip(s3):
    url = s3()
    st = Store.create(url, "features", IDENT)
    assert st.created and st.path == url
    x = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    with st.writing():
        st.write("vid/1", {"features": x}, attrs={"decoder": "pyav"}, summary={"n_frames": 2})
        st.fail("bad", "corrupt")
    st2 = Store.open(url, kind="features")
    arrays, attrs = st2.read("vid/1")
    np.testing.assert_array_equal(arrays["features"][...], x)
    assert attrs["decoder"] == "pyav" and attrs["complete"] is True
    assert st2.done()["vid/1"]["n_frames"] == 2 and st2.failed()["bad"]["reason"] == "corrupt"
    loaded, _ = st2.load("vid/1")
    assert loaded["features"].dtype == np.float16
    assert st2.get("missing") is None and not st2.has("missing") and st2.has("vid/1")
    with pytest.raises(VtcError, match="video 'missing' is not in"):
        st2.read("missing")
    # the session's parts were compacted into the table at its end; the lease was released
    objs = _objects(url)
    assert ix.MANIFEST in objs and not any(o.startswith(ix.PARTS_DIR) for o in objs)
    assert ".lease" not in objs and ix.LOG_FILE not in objs
    assert st2.nbytes() > x.nbytes


def test_resume_appends_and_last_entry_wins(s3, monkeypatch):
    monkeypatch.setattr(ix, "PARTS_COMPACT_AT", 3)  # compactions inside the session too
    url = s3()
    st = Store.create(url, "features", IDENT)
    with st.writing():
        for i in range(5):
            st.write(f"v{i}", {"x": np.full(3, i)}, attrs={})
        st.fail("v5", "decode failed")
    st = Store.create(url, "features", json.loads(json.dumps(IDENT)))
    assert not st.created and set(st.done()) == {f"v{i}" for i in range(5)}
    with st.writing():
        st.write("v5", {"x": np.full(3, 5)}, attrs={})
        st.fail("v0", "re-checked: corrupt")
        # uncompacted parts are visible to a reader in the meantime
        other = Store.open(url)
        assert other.has("v5") and other.get("v0")["status"] == "failed"
    fresh = Store.open(url)
    assert set(fresh.done()) == {f"v{i}" for i in range(1, 6)} and fresh.failed()["v0"]["reason"].startswith(
        "re-"
    )
    assert list(fresh.entries()) == [f"v{i}" for i in range(6)]  # the order ids first appeared
    assert fresh.load("v5")[0]["x"].tolist() == [5, 5, 5]


def test_different_identity_and_not_a_store_are_refused(s3):
    url = s3()
    Store.create(url, "features", IDENT)
    other = {"encoder": {"model": "m", "layer": -2}, "sampling": {"frames": 8}}
    with pytest.raises(
        VtcError, match=r"different provenance \(encoder.layer: store has -1, this run has -2\)"
    ):
        Store.create(url, "features", other)
    with pytest.raises(VtcError, match="is a features store, expected a tokens store"):
        Store.open(url, kind="tokens")
    with pytest.raises(VtcError, match="not a vtc store"):
        Store.open(s3())
    with pytest.raises(VtcError, match="no such bucket"):
        Store.create("s3://no-such-bucket-vtc/s.zarr", "features", IDENT)


def test_a_lease_held_by_another_writer_is_one_line(s3):
    url = s3()
    st = Store.create(url, "features", IDENT)
    other = Store.open(url)
    with st.writing():
        with pytest.raises(
            VtcError, match=r"being written by another process \(lease held by .* pid \d+, expires in"
        ):
            with other.writing():
                pass
        st.write("a", {"x": np.zeros(2)}, attrs={})
    with other.writing():  # released at the end of the first session
        other.write("b", {"x": np.zeros(2)}, attrs={})
    assert set(Store.open(url).done()) == {"a", "b"}


def test_an_expired_lease_is_taken_over_and_its_writer_may_not_commit(s3, monkeypatch):
    """A writer that stalls (here: never renews) past its lease: the next writer takes the store over,
    and the stalled one, at its next renewal tick, learns it lost the lease and may not commit."""
    url = s3()
    st = Store.create(url, "features", IDENT)
    monkeypatch.setattr(lease_mod, "TTL", 0.3)
    monkeypatch.setattr(lease_mod, "GRACE", 0.0)
    monkeypatch.setattr(lease_mod.Lease, "_renew", lambda self: None)  # stalled: no renewal thread
    with pytest.raises(VtcError, match="lost the write lease"):  # the stalled session ends refused
        with st.writing():
            stalled = lease_mod._HELD[id(st._fs)]
            time.sleep(0.4)
            newcomer = Store.open(url)
            with newcomer.writing():
                newcomer.write("b", {"x": np.zeros(2)}, attrs={})
                stalled.renew()
                assert stalled.lost
                with pytest.raises(VtcError, match="lost the write lease"):
                    st.write("a", {"x": np.zeros(2)}, attrs={})
    assert set(Store.open(url).done()) == {"b"}
    assert ".lease" not in _objects(url)  # the newcomer released its own; the stalled one left it be


def test_a_torn_lease_object_counts_as_expired(s3):
    url = s3()
    st = Store.create(url, "features", IDENT)
    st._fs.write(lease_mod.LEASE, b'{"owner": "x", "expi')  # a writer killed mid-PUT cannot do this on S3
    with st.writing():  # ... but a foreign tool could: it does not lock the store forever
        st.write("a", {"x": np.zeros(2)}, attrs={})
    assert Store.open(url).has("a") and ".lease" not in _objects(url)


def test_a_commit_outside_a_writing_session_is_refused(s3):
    url = s3()
    st = Store.create(url, "features", IDENT)
    with pytest.raises(VtcError, match=r"commit inside Store.writing\(\) on an object store"):
        st.write("a", {"x": np.zeros(2)}, attrs={})
    assert not Store.open(url).has("a")  # its arrays were put, its entry never recorded


def test_put_in_one_process_commit_in_another(s3):
    """The Ray engine's split: workers open the store and put; the driver commits under its lease."""
    url = s3()
    driver = Store.create(url, "features", IDENT)
    worker = Store.open(url, kind="features")
    entry = worker.put("v", {"x": np.arange(4)}, attrs={"a": 1}, summary={"n_frames": 4})
    assert not Store.open(url).has("v")
    with driver.writing():
        driver.commit(entry)
    assert Store.open(url).load("v")[0]["x"].tolist() == [0, 1, 2, 3]


def test_vtc_info_reads_an_s3_store_and_a_missing_bucket_is_one_line(s3):
    import subprocess
    import sys

    url = s3()
    ident = {"encoder": {"model": "m", "layer": -1, "grid": [2, 2], "dim": 4}, "sampling": {"frames": 1}}
    st = Store.create(url, "features", ident)
    with st.writing():
        st.write("a", {"features": np.zeros((1, 4, 4))}, attrs={}, summary={"n_frames": 1})
    r = subprocess.run([sys.executable, "-m", "vtc", "info", url, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["videos done"] == 1
    assert "Unclosed" not in r.stderr  # no asyncio noise from the S3 client at exit
    r = subprocess.run(
        [sys.executable, "-m", "vtc", "info", "s3://no-such-bucket-vtc/x.zarr"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [x for x in r.stderr.splitlines() if "error: " in x] == [
        "error: s3://no-such-bucket-vtc/x.zarr is not a vtc store (no zarr.json); run `vtc extract` or `vtc compress` first"
    ]
