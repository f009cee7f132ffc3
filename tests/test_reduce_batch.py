"""Reducers batched over videos: `reduce_batch` equals one call per video bit for bit; `vtc compress
--batch-size` writes the same store whatever the batch size, and resumes after a failure mid-batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reducers import CONFIGS, ids, smooth_video

from vtc.cache import Store
from vtc.cache.store import video_key
from vtc.errors import VtcError
from vtc.reducers import Reduction, get_reducer, list_reducers
from vtc.reducers.batch import natively_batched, reduce_batch
from vtc.reducers.registry import ReducerError
from vtc.stages.compress import CompressOptions, compress, default_out

# every registered method with its defaults and the contract's extra settings, plus settings that
# change the batched code path (budgets that split frames unevenly, merging, odd-T handling)
BATCH_CONFIGS = CONFIGS + [
    ("tome", {"budget": "11"}),
    ("visionzip", {"budget": "40"}),
    ("dycoke", {"merge": "true"}),
    ("dycoke", {"odd": "keep", "k": "0.5"}),
    ("dycoke", {"official_offset": "true", "window": "2"}),
    ("framefusion", {"budget": "9", "threshold": "0.3"}),
    ("uniform", {"budget": "13"}),
    ("random", {"seed": "5"}),
    ("vidtome", {"budget": "17"}),
]
NATIVE = {"none", "pool", "uniform", "random", "dyntok", "dycoke", "framefusion", "tome", "visionzip"}


def attention_for(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(x.shape[0], x.shape[1], generator=g).softmax(dim=1)


def same(a: Reduction, b: Reduction) -> bool:
    """Bit-identical: every tensor equal in dtype, shape and bits (-0.0 != 0.0), the same metadata."""
    tensors = ("tokens", "kind", "pos", "indptr", "src", "weight")

    def bits(t):
        return t.contiguous().view(torch.uint8) if t.is_floating_point() else t

    return (
        all(
            getattr(a, n).dtype == getattr(b, n).dtype
            and torch.equal(bits(getattr(a, n)), bits(getattr(b, n)))
            for n in tensors
        )
        and (a.base, a.base_grid, a.n_input_tokens) == (b.base, b.base_grid, b.n_input_tokens)
        and a.extras.keys() == b.extras.keys()
        and all(torch.equal(bits(a.extras[k]), bits(b.extras[k])) for k in a.extras)
    )


def batch_inputs(Ts, grid, C, dtype=torch.float32):
    xs = [smooth_video(T, *grid, C, seed=10 * i + T, dtype=dtype) for i, T in enumerate(Ts)]
    return xs, [{"attention": attention_for(x, i)} for i, x in enumerate(xs)]


def check_batch_equals_loop(name, params, xs, auxs, grid):
    r = get_reducer(name, **params)
    needs = r.needs
    auxs = [{k: a[k] for k in needs} for a in auxs]
    alone = [r(x, grid, **a) for x, a in zip(xs, auxs, strict=True)]
    together = reduce_batch(r, xs, grid, auxs)
    assert len(together) == len(xs)
    for v, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert same(a, b), f"{name} {params}: video {v} (T={xs[v].shape[0]}) differs when batched"
    # the batch really depends on each video: reversing the batch reverses the outputs
    back = reduce_batch(r, xs[::-1], grid, auxs[::-1])
    assert all(same(a, b) for a, b in zip(alone[::-1], back, strict=True))


@pytest.mark.parametrize("cfg", BATCH_CONFIGS, ids=[ids(c) for c in BATCH_CONFIGS])
def test_batch_equals_one_video_at_a_time(cfg):
    """3 videos of different T (odd, 1 and even) on a non-square grid: each output equals the lone call."""
    name, params = cfg
    grid = (5, 7)
    xs, auxs = batch_inputs([3, 1, 4], grid, 6)
    check_batch_equals_loop(name, params, xs, auxs, grid)


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_batch_equals_loop_at_real_width(name):
    """LLaVA-OV's 1152 channels on a 14x14 grid, float16 as stored: sizes where CPU kernels go parallel and
    BLAS picks other paths for small batches (T = 1 and 2 are where a matrix product would differ)."""
    grid = (14, 14)
    xs, auxs = batch_inputs([2, 5, 1, 2], grid, 1152, dtype=torch.float16)
    params = {"grid": "native"} if "grid" in get_reducer(name).__dataclass_fields__ else {}
    check_batch_equals_loop(name, params, xs, auxs, grid)


def test_natively_batched_methods():
    assert {n for n, c in list_reducers().items() if natively_batched(c)} >= NATIVE
    assert not natively_batched(get_reducer("vqtoken"))  # k-means: the loop fallback, see its docstring


def test_batch_bad_input_is_one_line_error():
    r = get_reducer("dyntok")
    x = smooth_video(2, 5, 7, 6)
    with pytest.raises(ReducerError, match="2 videos but 1 aux"):
        reduce_batch(r, [x, x], (5, 7), [{}])
    with pytest.raises(ReducerError, match="different channels"):
        reduce_batch(r, [x, smooth_video(2, 5, 7, 4)], (5, 7))
    with pytest.raises(ValueError, match="shape"):
        reduce_batch(r, [x, torch.zeros(2, 34, 6)], (5, 7))
    assert reduce_batch(r, [], (5, 7)) == []


# --------------------------------------------------------------------------------------------------
# vtc compress --batch-size


@pytest.fixture()
def mixed_store(tmp_path):
    """7 videos of 1..5 frames (odd, even, repeated T) on a 6x5 grid, float16, with attention."""
    st = Store.create(
        tmp_path / "f.zarr", "features", {"encoder": {"grid": [6, 5], "dim": 8}, "sampling": {}}
    )
    for i, t in enumerate((3, 1, 4, 4, 2, 5, 3)):
        x = smooth_video(t, 6, 5, 8, seed=i, dtype=torch.float16).numpy()
        st.write(
            f"v{i}",
            {"features": x, "attention": attention_for(torch.from_numpy(x), i).numpy()},
            attrs={},
            summary={"n_frames": t},
        )
    return tmp_path / "f.zarr"


def store_content(path) -> dict:
    """Everything a token store holds but the timing: per video its arrays (bytes, dtype, shape), attrs
    and index entry without time/reduce_s/reduce_batch; the identity and the directory names."""
    st = Store.open(path, kind="tokens")
    out = {"identity": st.meta["identity"], "keys": sorted(p.name for p in (path / "videos").iterdir())}
    for vid, entry in st.done().items():
        arrays, attrs = st.read(vid)
        out[vid] = (
            {
                n: (a.dtype.str, a.shape, a[...].tobytes())
                for n, a in ((n, np.asarray(a[...])) for n, a in arrays.items())
            },
            attrs,
            {k: v for k, v in entry.items() if k not in ("time", "reduce_s", "reduce_batch")},
        )
    return out


@pytest.mark.parametrize(
    "method,params",
    [("dycoke", {}), ("tome", {"budget": "7"}), ("visionzip", {"budget": "12"}), ("vqtoken", {"k": "5"})],
)
def test_compress_store_is_the_same_for_any_batch_size(mixed_store, tmp_path, method, params):
    one = compress(
        CompressOptions(mixed_store, method, params, out=tmp_path / "one.zarr", batch_size=1), quiet=True
    )
    four = compress(
        CompressOptions(mixed_store, method, params, out=tmp_path / "four.zarr", batch_size=4), quiet=True
    )
    assert one.done == four.done == 7 and one.llm_tokens == four.llm_tokens
    a, b = store_content(tmp_path / "one.zarr"), store_content(tmp_path / "four.zarr")
    assert a == b
    entries = Store.open(tmp_path / "four.zarr").done()
    assert [entries[f"v{i}"]["reduce_batch"] for i in range(7)] == [4, 4, 4, 4, 3, 3, 3]
    assert all(e["reduce_s"] > 0 for e in entries.values())
    # the default name does not depend on the batch size either
    assert default_out(mixed_store, {**one.method, "seed": 0}) == default_out(
        mixed_store, {**four.method, "seed": 0}
    )


def test_compress_resumes_after_a_failure_mid_batch(mixed_store, tmp_path, monkeypatch):
    ref = compress(
        CompressOptions(mixed_store, "dyntok", out=tmp_path / "ref.zarr", batch_size=3), quiet=True
    )
    real_write, calls = Store.write, []

    def failing_write(self, video_id, *args, **kwargs):
        calls.append(video_id)
        if len(calls) == 5:  # the second video of the second batch: its arrays half written
            g = self._group.require_group("videos").create_group(video_key(video_id), overwrite=True)
            g.create_array("tokens", shape=(2, 2), dtype="float32")
            raise OSError("disk full")
        return real_write(self, video_id, *args, **kwargs)

    monkeypatch.setattr(Store, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        compress(CompressOptions(mixed_store, "dyntok", out=tmp_path / "t.zarr", batch_size=3), quiet=True)
    monkeypatch.setattr(Store, "write", real_write)
    # the batch's first video is done, the half-written one is not indexed, nothing after it was written
    assert set(Store.open(tmp_path / "t.zarr").done()) == {"v0", "v1", "v2", "v3"}
    assert (tmp_path / "t.zarr" / "videos" / video_key("v4")).exists()
    again = compress(
        CompressOptions(mixed_store, "dyntok", out=tmp_path / "t.zarr", batch_size=3), quiet=True
    )
    assert (again.done, again.skipped) == (3, 4)
    assert ref.done == 7 and store_content(tmp_path / "t.zarr") == store_content(tmp_path / "ref.zarr")


def test_compress_refuses_a_zero_batch(mixed_store, tmp_path):
    with pytest.raises(VtcError, match="batch-size must be >= 1"):
        compress(CompressOptions(mixed_store, "none", out=tmp_path / "t.zarr", batch_size=0), quiet=True)
