"""Training from the cache against training from pixels: samples/s of the same optimizer step, side by side.

    .venv/bin/python benchmarks/train.py                    # tiny model, CPU
    .venv/bin/python benchmarks/train.py --steps 20 --frames 8

Both arms train the same adapters (projector + full LLM) of the same tiny LLaVA-OV on the same synthetic
videos and questions (vtc.video.synthetic), one sample per step:

- **cache**: what `vtc train` does: features read from the feature store, the reducer applied, then the
  adapter + LLM forward and backward;
- **pixels**: what the reference codes do at every step: decode the video (the same decoder and
  sampling as `vtc extract`), run the vision tower, then the same reducer and the same step.

The table shows the median seconds per sample of each part (step = reducer + adapter/LLM forward and
backward + optimizer) and the ratio pixels/cache (the cache's gain).
The tiny tower is cheap; at real sizes the tower (SigLIP-so400m: 642 GFLOP per frame) dominates the
pixel arm, so the gain there is larger (run it on a GPU with a real checkpoint via --model).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per arm (after 2 warm-up steps)")
    ap.add_argument("--method", default="none")
    ap.add_argument("--model", help="a LLaVA-OV checkpoint dir instead of the tiny random one")
    args = ap.parse_args()

    import torch

    from vtc.encoders.tiny import build_tiny_checkpoints
    from vtc.encoders.vision import VisionEncoder
    from vtc.stages.extract import ExtractOptions, extract
    from vtc.stages.train import Trainer, TrainOptions
    from vtc.video import DecodeWorker, SamplingPolicy
    from vtc.video.synthetic import make_synthetic_qa

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or str(build_tiny_checkpoints(tmp / "models")["llava_ov"])
        paths = make_synthetic_qa(tmp / "syn", n_train=8, n_test=8)
        extract(ExtractOptions([str(paths["videos"])], tmp / "feats.zarr", model=model, frames=8), quiet=True)
        opt = TrainOptions(
            data=str(paths["train"]), model=model, adapters="projector,full", out=str(tmp / "run"),
            features=str(tmp / "feats.zarr"), method=args.method, steps=10_000, lr=1e-4,
        )  # fmt: skip
        trainer = Trainer(opt)
        encoder = VisionEncoder(model)
        policy = SamplingPolicy(frames=8)
        videos = {p.stem: p for p in paths["videos"].glob("*.mp4")}

        def cache_step(micro: int) -> dict:
            trainer.cache.items.clear()  # read from the store every time, as a long run does
            t0 = time.perf_counter()
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.micro_loss(micro).backward()
            trainer.optimizer.step()
            return {"total": time.perf_counter() - t0}

        worker = DecodeWorker(policy, size=encoder.preprocess.size)

        def pixel_step(micro: int) -> dict:
            (sample, vid), = trainer.batch_samples(micro)  # fmt: skip
            t0 = time.perf_counter()
            (_, decoded), = list(worker.imap([str(videos[vid])]))  # fmt: skip
            t1 = time.perf_counter()
            feats = encoder.encode(decoded.frames).half()
            t2 = time.perf_counter()
            # the same step (reducer included), fed with these fresh features instead of the store's
            trainer.cache.items[("x", vid)] = (feats, None)
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.micro_loss(micro).backward()
            trainer.optimizer.step()
            t3 = time.perf_counter()
            return {"decode": t1 - t0, "tower": t2 - t1, "total": t3 - t0}

        with worker:
            for arm in (cache_step, pixel_step):
                arm(0), arm(1)  # warm-up
            rows = {"cache": [], "pixels": []}
            for k in range(args.steps):  # interleaved, so both arms see the same machine state
                rows["cache"].append(cache_step(2 + k))
                rows["pixels"].append(pixel_step(2 + k))
        med = {arm: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for arm, rs in rows.items()}
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; method {args.method}; "
              f"median of {args.steps} steps, one sample each")  # fmt: skip
        print(f"{'arm':<8}{'decode s':>10}{'tower s':>10}{'step s':>10}{'samples/s':>11}")
        for arm, m in med.items():
            step = m["total"] - m.get("decode", 0) - m.get("tower", 0)
            print(
                f"{arm:<8}{m.get('decode', 0):>10.4f}{m.get('tower', 0):>10.4f}{step:>10.4f}{1 / m['total']:>11.2f}"
            )
        print(f"pixels/cache time per sample: {med['pixels']['total'] / med['cache']['total']:.2f}x")


if __name__ == "__main__":
    main()
