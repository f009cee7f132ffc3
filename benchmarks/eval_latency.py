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


def measure(arch="tiny", device="cpu", dtype="fp32", frames=32, new=16, repeats=5, methods=None, model=None):
    """Yield one dict per method (label, tokens, decode tokens, ratios, TTFT, ms/token, peak MiB); the
    first dict is the run's description ({"about": ...})."""
    from vtc.eval.llava import LlavaRunner
    from vtc.eval.online import get_online
    from vtc.reducers import get_reducer

    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model or build_model(Path(tmp) / "model", arch, torch_dtype)
        runner = LlavaRunner(str(model_dir), device=device, dtype=dtype)
        dim = runner.model.config.vision_config.hidden_size
        x = video(frames, dim)
        peak = Peak(device)
        yield {
            "about": f"torch {torch.__version__}, device {device}"
            + (
                f" ({torch.cuda.get_device_name(device)})"
                if peak.cuda
                else f", {torch.get_num_threads()} threads"
            )
            + f", {dtype}, arch {arch if not model else model}; {frames} frames, "
            f"{new} new tokens, median of {repeats}"
        }
        base = None
        for label, method, params, online, oparams in METHODS:
            if methods and label not in methods:
                continue
            red = get_reducer(method, **params)(x.half(), (27, 27))
            # the tiny model has 2 layers: prune from its last layer at the latest (printed in the label)
            depth = runner.model.config.text_config.num_hidden_layers
            capped = {key: min(v, depth - 1) if key in ("k", "l") else v for key, v in oparams.items()}
            if capped != oparams:
                label += "".join(f" {key}={v}" for key, v in capped.items() if key in ("k", "l"))
            on = get_online(online, **capped) if online else None

            def run(red=red, on=on):
                return runner.run(x, red, QUESTION, max_new_tokens=new, online=on, ignore_eos=True)

            run()  # warm-up
            peak.reset()
            gens = [run() for _ in range(repeats)]
            ttft = statistics.median(g.ttft_s for g in gens)
            dec = [g.decode_s_per_token for g in gens if g.decode_s_per_token is not None]
            dec_ms = 1000 * statistics.median(dec) if dec else float("nan")
            g = gens[0]
            if base is None:
                base = (g.visual_prefill, ttft, dec_ms)
            tok_ratio = g.visual_prefill / base[0]
            lat_ratio = ttft / base[1]
            yield {
                "method": label,
                "tokens": g.visual_prefill,
                "decode_tokens": g.visual_decode,
                "token_ratio": tok_ratio,
                "ttft_ms": 1000 * ttft,
                "latency_ratio": lat_ratio,
                "latency_per_token_ratio": lat_ratio / tok_ratio,
                "decode_ms_per_token": dec_ms,
                "decode_ratio": dec_ms / base[2],
                "peak_mib": peak.read_mib(),
            }


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
    rows = measure(
        args.arch, args.device, args.dtype, args.frames, args.new, args.repeats, args.methods, args.model
    )
    print(next(rows)["about"])
    head = (
        f"{'method':<14}{'tokens':>7}{'decode':>7}{'tok ratio':>10}{'TTFT ms':>10}{'lat ratio':>10}"
        f"{'lat/tok':>8}{'ms/tok':>8}{'dec ratio':>10}{'peak MiB':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        mib = r["peak_mib"]
        print(
            f"{r['method']:<14}{r['tokens']:>7}{r['decode_tokens']:>7.0f}{r['token_ratio']:>10.3f}"
            f"{r['ttft_ms']:>10.1f}{r['latency_ratio']:>10.3f}{r['latency_per_token_ratio']:>8.2f}"
            f"{r['decode_ms_per_token']:>8.2f}{r['decode_ratio']:>10.3f}"
            + (f"{mib:>10.0f}" if mib is not None else f"{'-':>10}"),
            flush=True,
        )


if __name__ == "__main__":
    main()
