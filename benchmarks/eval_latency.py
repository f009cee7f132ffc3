"""Prefill latency, decode time per token and peak memory against visual token count, per method.

    .venv/bin/python benchmarks/eval_latency.py                            # tiny random LLaVA-OV, CPU
    .venv/bin/python benchmarks/eval_latency.py --arch 0.5b --device cuda --dtype bf16   # on a GPU

One synthetic 32-frame video (27×27 SigLIP features, smooth across frames) is reduced by every method
in the list; LLaVA-OneVision then answers one question from each reduction with greedy decoding. The
model has random weights: ``--arch 0.5b`` builds the LLaVA-OneVision-Qwen2-0.5B shapes (Qwen2-0.5B
LLM: 24 layers, hidden 896, 14 heads / 2 KV heads, MLP 4864, vocabulary 151,936; SigLIP-so400m width
1152 for the projector), ``--arch tiny`` the test model. Latency does not depend on weight values, so
random weights give the real model's timings. Decoding ignores end-of-sequence so every method
decodes the same number of tokens.

For each method: the visual tokens reaching the LLM (at prefill, and visible to the last layer while
decoding), the token ratio against ``none`` (stock LLaVA-OV tokens), the median time to first token
and its ratio against ``none``, **latency ratio / token ratio** (1.0 = latency falls as fast as the
tokens; above 1 = fixed costs remain), decode ms/token, and peak memory (CUDA allocator peak on a GPU;
on a CPU, the process's peak resident set since the method started, reset through
/proc/self/clear_refs — it includes the model weights).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (label, offline method, its params, online method, its params)
METHODS = [
    ("none", "none", {}, None, {}),
    ("pool s=3", "pool", {"stride": 3}, None, {}),
    ("dyntok", "dyntok", {}, None, {}),
    ("dycoke", "dycoke", {"k": 0.7}, None, {}),
    ("dycoke + kv", "dycoke", {"k": 0.7}, "dycoke-kv", {"l": 3, "p": 0.7}),
    ("fastv", "none", {}, "fastv", {"k": 2, "ratio": 0.5}),
    ("framefusion", "framefusion", {}, None, {}),
    ("tome 25%", "tome", {"ratio": 0.25}, None, {}),
    ("vidtome", "vidtome", {}, None, {}),
    ("uniform 25%", "uniform", {"ratio": 0.25}, None, {}),
    ("vqtoken k=32", "vqtoken", {"k": 32}, None, {}),
]

QUESTION = "What happens in the video? A. one B. two C. three D. four\nAnswer with the option's letter."


# Qwen2-0.5B, as in llava-hf/llava-onevision-qwen2-0.5b-ov-hf's text_config
QWEN2_05B = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
}


def build_model(out: Path, arch: str, dtype: torch.dtype) -> Path:
    """A random-weight LLaVA-OV checkpoint of the given shapes, saved where from_pretrained reads it."""
    from vtc.encoders.tiny import build_tiny_checkpoints, build_tiny_llava_ov, tiny_vision_config

    if arch == "tiny":
        return build_tiny_checkpoints(out)["llava_ov"]
    vision = tiny_vision_config(hidden=1152, layers=1, heads=16)  # the tower never runs: features are given
    return build_tiny_llava_ov(out, text=QWEN2_05B, vision=vision, dtype=dtype)


def video(T: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 729, dim, generator=g)
    drift = 0.3 * torch.randn(T, 729, dim, generator=g)
    return base + drift.cumsum(0) / T**0.5


class Peak:
    """Peak memory over a block: CUDA allocator peak, or the process's peak RSS (VmHWM) since reset."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.device = device

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass

    def read_mib(self) -> float | None:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=("tiny", "0.5b"), default="tiny")
    ap.add_argument("--model", help="an existing LLaVA-OV checkpoint dir instead of a random one")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--new", type=int, default=16, help="tokens decoded per answer")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", nargs="*", help="labels to run (default: all)")
    args = ap.parse_args()

    from vtc.eval.llava import LlavaRunner
    from vtc.eval.online import get_online
    from vtc.reducers import get_reducer

    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_model(Path(tmp) / "model", args.arch, torch_dtype)
        runner = LlavaRunner(str(model_dir), device=args.device, dtype=args.dtype)
        dim = runner.model.config.vision_config.hidden_size
        x = video(args.frames, dim)
        peak = Peak(args.device)
        print(
            f"torch {torch.__version__}, device {args.device}"
            + (
                f" ({torch.cuda.get_device_name(args.device)})"
                if peak.cuda
                else f", {torch.get_num_threads()} threads"
            )
            + f", {args.dtype}, arch {args.arch if not args.model else args.model}; {args.frames} frames, "
            f"{args.new} new tokens, median of {args.repeats}"
        )
        head = (
            f"{'method':<14}{'tokens':>7}{'decode':>7}{'tok ratio':>10}{'TTFT ms':>10}{'lat ratio':>10}"
            f"{'lat/tok':>8}{'ms/tok':>8}{'dec ratio':>10}{'peak MiB':>10}"
        )
        print(head)
        print("-" * len(head))
        base = None
        for label, method, params, online, oparams in METHODS:
            if args.methods and label not in args.methods:
                continue
            red = get_reducer(method, **params)(x.half(), (27, 27))
            # the tiny model has 2 layers: prune from its last layer at the latest (printed in the label)
            depth = runner.model.config.text_config.num_hidden_layers
            capped = {key: min(v, depth - 1) if key in ("k", "l") else v for key, v in oparams.items()}
            if capped != oparams:
                label += "".join(f" {key}={v}" for key, v in capped.items() if key in ("k", "l"))
            on = get_online(online, **capped) if online else None

            def run(red=red, on=on):
                return runner.run(x, red, QUESTION, max_new_tokens=args.new, online=on, ignore_eos=True)

            run()  # warm-up
            peak.reset()
            gens = [run() for _ in range(args.repeats)]
            ttft = statistics.median(g.ttft_s for g in gens)
            dec = [g.decode_s_per_token for g in gens if g.decode_s_per_token is not None]
            dec_ms = 1000 * statistics.median(dec) if dec else float("nan")
            g = gens[0]
            if base is None:
                base = (g.visual_prefill, ttft, dec_ms)
            tok_ratio = g.visual_prefill / base[0]
            lat_ratio = ttft / base[1]
            mib = peak.read_mib()
            print(
                f"{label:<14}{g.visual_prefill:>7}{g.visual_decode:>7.0f}{tok_ratio:>10.3f}{1000 * ttft:>10.1f}"
                f"{lat_ratio:>10.3f}{lat_ratio / tok_ratio:>8.2f}{dec_ms:>8.2f}{dec_ms / base[2]:>10.3f}"
                + (f"{mib:>10.0f}" if mib is not None else f"{'-':>10}"),
                flush=True,
            )


if __name__ == "__main__":
    main()
