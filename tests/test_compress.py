"""`vtc compress` as a stage: stores with failed videos, resume, determinism under a seed, provenance."""

import numpy as np
import pytest

from vtc.cache import Store
from vtc.errors import VtcError
from vtc.stages.compress import CompressOptions, compress, default_out


@pytest.fixture()
def store_with_failure(tmp_path):
    st = Store.create(
        tmp_path / "f.zarr", "features", {"encoder": {"grid": [6, 6], "dim": 4}, "sampling": {}}
    )
    rng = np.random.default_rng(0)
    for vid, t in (("a", 3), ("b", 2)):
        st.write(
            vid,
            {"features": rng.standard_normal((t, 36, 4)).astype(np.float16)},
            attrs={},
            summary={"n_frames": t},
        )
    st.fail("broken", "cannot open as a video (corrupt, truncated or not a media file)")
    return tmp_path / "f.zarr"


def test_failed_videos_are_skipped_and_counted(store_with_failure, tmp_path):
    s = compress(
        CompressOptions(store_with_failure, "tome", {"budget": "10"}, out=tmp_path / "t.zarr"), quiet=True
    )
    assert (s.done, s.parent_failed) == (2, 1)
    tok = Store.open(tmp_path / "t.zarr", kind="tokens")
    assert set(tok.done()) == {"a", "b"} and not tok.failed()
    assert all(e["n_visual"] == 10 for e in tok.done().values())


def test_rerun_resumes_and_same_seed_is_bit_identical(store_with_failure, tmp_path):
    a = compress(
        CompressOptions(store_with_failure, "random", {"budget": "7"}, out=tmp_path / "r1.zarr", seed=3),
        quiet=True,
    )
    again = compress(
        CompressOptions(store_with_failure, "random", {"budget": "7"}, out=tmp_path / "r1.zarr", seed=3),
        quiet=True,
    )
    assert (a.done, again.done, again.skipped) == (2, 0, 2)
    compress(
        CompressOptions(store_with_failure, "random", {"budget": "7"}, out=tmp_path / "r2.zarr", seed=3),
        quiet=True,
    )
    compress(
        CompressOptions(store_with_failure, "random", {"budget": "7"}, out=tmp_path / "r3.zarr", seed=4),
        quiet=True,
    )
    src = {p: Store.open(tmp_path / p).read("a")[0]["src"][...] for p in ("r1.zarr", "r2.zarr", "r3.zarr")}
    assert np.array_equal(src["r1.zarr"], src["r2.zarr"]) and not np.array_equal(
        src["r1.zarr"], src["r3.zarr"]
    )
    assert Store.open(tmp_path / "r3.zarr").meta["identity"]["method"]["seed"] == 4
    with pytest.raises(VtcError, match="different provenance"):
        compress(
            CompressOptions(store_with_failure, "random", {"budget": "8"}, out=tmp_path / "r1.zarr", seed=3),
            quiet=True,
        )


def test_default_out_is_named_by_content(store_with_failure):
    cfg = {"method": "pool", "stride": 3, "mode": "bilinear", "seed": 0}
    out = default_out(store_with_failure, cfg)
    assert (
        out.parent == store_with_failure.parent and out.name.startswith("f.pool-") and out.suffix == ".zarr"
    )
    assert default_out(store_with_failure, {**cfg, "stride": 2}) != out


def test_cuda_device_without_cuda_is_a_clear_error(store_with_failure, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the GPU path is tested in test_reducers_on_cuda_match_cpu")
    with pytest.raises(VtcError, match="CUDA is not available"):
        compress(
            CompressOptions(store_with_failure, "tome", out=tmp_path / "t.zarr", device="cuda"), quiet=True
        )


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_reducers_on_cuda_match_cpu():
    """Every reducer runs on CUDA through the device context and keeps the same tokens as on the CPU,
    one video at a time and batched (videos of 4, 3 and 1 frames stacked on the GPU)."""
    import torch

    from tests.test_reducers import smooth_video
    from vtc.reducers import get_reducer, list_reducers
    from vtc.stages.compress import run_reducer, run_reducer_batch

    x = smooth_video(4, 27, 27, 16, seed=5)
    for name in list_reducers():
        r = get_reducer(name)
        aux = {"attention": torch.rand(4, 729, generator=torch.Generator().manual_seed(0))} if r.needs else {}
        cpu = run_reducer(r, x, (27, 27), aux, "cpu")
        gpu = run_reducer(r, x, (27, 27), aux, "cuda")
        assert gpu.src.device.type == "cpu"
        assert cpu.visual_groups() == gpu.visual_groups(), name
        torch.testing.assert_close(cpu.tokens, gpu.tokens, atol=1e-4, rtol=1e-4)
        xs = [x, x[:3].flip(0), x[2:3]]
        auxs = [{k: v[: len(xi)] for k, v in aux.items()} for xi in xs]
        alone = [run_reducer(r, xi, (27, 27), a, "cpu") for xi, a in zip(xs, auxs, strict=True)]
        batched = run_reducer_batch(r, xs, (27, 27), auxs, "cuda")
        for a, b in zip(alone, batched, strict=True):
            assert b.src.device.type == "cpu" and b.base_grid == a.base_grid
            assert a.visual_groups() == b.visual_groups(), name
            torch.testing.assert_close(a.tokens, b.tokens, atol=1e-4, rtol=1e-4)
