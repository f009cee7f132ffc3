"""The zarr store: atomic per-video commits, index, provenance checks."""

import json

import numpy as np
import pytest

from vtc.cache import INDEX_FILE, Store, video_key
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
