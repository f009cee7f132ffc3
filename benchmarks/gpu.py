"""Everything a lent GPU machine should check, in one command of a few minutes, into one JSON of figures.

    .venv/bin/python benchmarks/gpu.py --out gpu.json        # on a machine with CUDA (make gpu)
    .venv/bin/python benchmarks/gpu.py --smoke --out s.json  # every step at toy sizes, on the CPU too

Steps (each timed; one that fails is recorded with its error and the others still run):
1. ``cuda_tests``: the CUDA-marked tests (``pytest -m gpu``).
2. ``compress_cuda``: every registered method through ``vtc compress`` on a synthetic feature store
   (27×27×1152 float16, smooth across frames, with VisionZip's attention array), once with
   ``--device cpu`` and once with ``--device cuda``: token counts and plans must be equal, token values
   close (CUDA's float sums may differ in the last bits); both times and their ratio.
3. ``extract_so400m``: the full-size SigLIP-so400m architecture (27 layers, width 1152, random
   weights saved and loaded through ``from_pretrained``), bf16: the tower alone on 64-frame batches,
   and ``vtc extract`` on synthetic videos (its default decode workers: cores - 1), frames/s of each
   and their ratio (issue 13's target: the workers keep the tower busy).
4. ``eval_prefill_05b``: LLaVA-OneVision at the 0.5B shapes (random weights), bf16: time to first
   token per method against its visual tokens (benchmarks/eval_latency.py's table).

It is never run by CI: without CUDA (and without --smoke) it says so and exits 1. With --smoke the
same code runs at toy sizes on whatever device there is, so tests/test_gpu_script.py keeps it working.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def cuda_tests(device: str, smoke: bool) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    last = [line for line in r.stdout.strip().splitlines() if line.strip()][-1:] or [""]
    return {"returncode": r.returncode, "summary": last[0]}


def synthetic_store(path: Path, videos: int, frames: int, grid: tuple[int, int], dim: int) -> Path:
    """A feature store of smooth random features (and received attention) in vtc's layout."""
    from vtc.cache import Store

    st = Store.create(
        path,
        "features",
        {
            "encoder": {"model": "synthetic", "grid": list(grid), "dim": dim, "layer": -1},
            "sampling": {"frames": frames},
            "storage_dtype": "float16",
            "attention": "synthetic",
        },
    )
    n = grid[0] * grid[1]
    with st.writing():
        for v in range(videos):
            g = torch.Generator().manual_seed(v)
            base = torch.randn(1, n, dim, generator=g)
            x = base + (0.3 * torch.randn(frames, n, dim, generator=g)).cumsum(0) / frames**0.5
            att = torch.softmax(torch.randn(frames, n, generator=g), dim=-1)
            st.write(
                f"v{v}",
                {
                    "features": x.half().numpy(),
                    "attention": att.numpy(),
                    "frame_indices": np.arange(frames),
                },
                attrs={},
                summary={"n_frames": frames},
            )
    return path


def compress_cuda(device: str, smoke: bool) -> dict:
    from vtc.cache import Store
    from vtc.reducers import list_reducers
    from vtc.stages.compress import CompressOptions, compress

    shape = (
        dict(videos=2, frames=4, grid=(6, 6), dim=16)
        if smoke
        else dict(videos=4, frames=32, grid=(27, 27), dim=1152)
    )
    out: dict = {"shape": shape, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        feats = synthetic_store(Path(tmp) / "f.zarr", **shape)
        for name in list_reducers():
            row: dict = {}
            try:
                a = compress(
                    CompressOptions(feats, name, out=Path(tmp) / f"{name}.cpu.zarr", device="cpu"), quiet=True
                )
                b = compress(
                    CompressOptions(feats, name, out=Path(tmp) / f"{name}.dev.zarr", device=device),
                    quiet=True,
                )
                row.update(cpu_s=a.seconds, device_s=b.seconds, speedup=a.seconds / max(b.seconds, 1e-9))
                row["equal_counts"] = a.llm_tokens == b.llm_tokens
                sa, sb = Store.open(a.out), Store.open(b.out)
                equal_plans, diff = True, 0.0
                for vid in sa.done():
                    xa, _ = sa.read(vid)
                    xb, _ = sb.read(vid)
                    for key, arr in xa.items():
                        u, w = np.asarray(arr[...]), np.asarray(xb[key][...])
                        if u.dtype.kind == "f":
                            diff = max(diff, float(np.abs(u.astype(np.float64) - w).max()) if u.size else 0.0)
                        elif u.shape != w.shape or not np.array_equal(u, w):
                            equal_plans = False
                row.update(equal_plans=equal_plans, max_abs_diff=diff)
            except Exception as e:  # noqa: BLE001 - one method's failure is a figure, not the end of the run
                row["error"] = f"{type(e).__name__}: {e}"
            out["methods"][name] = row
    ok = [r.get("equal_counts") and r.get("equal_plans") for r in out["methods"].values()]
    out["all_equal"] = all(ok)
    return out


def extract_so400m(device: str, smoke: bool) -> dict:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from vtc.encoders.tiny import tiny_vision_config
    from vtc.encoders.vision import VisionEncoder
    from vtc.stages.demo import synth_video
    from vtc.stages.extract import ExtractOptions, extract

    dtype = "fp32" if device == "cpu" else "bf16"
    from extract import SO400M

    cfg = tiny_vision_config() if smoke else SiglipVisionConfig(**SO400M)
    batch, n_videos, frames = (4, 2, 4) if smoke else (64, 96, 32)  # 3,072 frames: seconds at ~1,200/s
    res: dict = {"dtype": dtype, "layers": cfg.num_hidden_layers, "batch_size": batch}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        SiglipVisionModel(cfg).to(torch.bfloat16 if dtype == "bf16" else torch.float32).save_pretrained(
            Path(tmp) / "so400m"
        )
        enc = VisionEncoder(str(Path(tmp) / "so400m"), device=device, dtype=dtype)
        x = np.random.default_rng(0).integers(0, 256, (batch, 384, 384, 3), dtype=np.uint8)
        enc.encode(x, batch_size=batch)  # warm-up (and cuDNN/kernel selection)
        times = []
        for _ in range(1 if smoke else 5):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            enc.encode(x, batch_size=batch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        res["tower_frames_per_s"] = batch / statistics.median(times)
        videos = [str(synth_video(Path(tmp) / f"v{i}.mp4", n_frames=48, seed=i)) for i in range(n_videos)]
        s = extract(
            ExtractOptions(
                videos,
                Path(tmp) / "f.zarr",
                model=str(Path(tmp) / "so400m"),
                frames=frames,
                device=device,
                dtype=dtype,
                batch_size=batch,
            ),
            quiet=True,
        )
        res.update(
            extract_frames=s.frames,
            extract_frames_per_s=s.frames_per_s,
            extract_failed=len(s.failed),
            decode_workers=s.workers,
            pipeline_vs_tower=s.frames_per_s / res["tower_frames_per_s"],
        )
    return res


def eval_prefill_05b(device: str, smoke: bool) -> dict:
    from eval_latency import measure

    dtype = "fp32" if device == "cpu" else "bf16"
    if smoke:
        rows = list(
            measure("tiny", device, dtype, frames=4, new=2, repeats=1, methods=["none", "pool s=3", "fastv"])
        )
    else:
        rows = list(measure("0.5b", device, dtype, frames=32, new=16, repeats=3))
    return {"about": rows[0]["about"], "methods": rows[1:]}


STEPS = {
    "cuda_tests": cuda_tests,
    "compress_cuda": compress_cuda,
    "extract_so400m": extract_so400m,
    "eval_prefill_05b": eval_prefill_05b,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu-figures.json"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="toy sizes, any device (checks the script itself)")
    ap.add_argument("--steps", nargs="*", choices=list(STEPS), help="run only these steps")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        if not args.smoke:
            print(
                "no CUDA device here: this script is for a lent GPU machine (use --smoke to check it)",
                file=sys.stderr,
            )
            return 1
        args.device = "cpu"
    from vtc.stages.evaluate import git_hash
    from vtc.versions import library_versions

    report: dict = {
        "device": torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "smoke": args.smoke,
        "git": git_hash(),
        "versions": library_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": {},
    }
    t_all = time.perf_counter()
    for name in args.steps or STEPS:
        t0 = time.perf_counter()
        print(f"[gpu.py] {name} ...", flush=True)
        try:
            result = STEPS[name](args.device, args.smoke)
        except Exception as e:  # noqa: BLE001 - recorded, and the next step runs
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        report["steps"][name] = result
        print(
            f"[gpu.py] {name} done in {result['wall_s']} s"
            + (f": {result['error']}" if "error" in result else ""),
            flush=True,
        )
        args.out.write_text(json.dumps(report, indent=2, default=str))  # figures so far survive a time-out
    report["wall_s"] = round(time.perf_counter() - t_all, 2)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"[gpu.py] wrote {args.out} in {report['wall_s']} s")
    errors = [n for n, r in report["steps"].items() if "error" in r]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
