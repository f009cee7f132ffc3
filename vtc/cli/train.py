"""`vtc train`: adapters trained on cached tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Device, Json, Quiet, Seed, console, examples
from vtc.errors import VtcError


def parse_value_lists(sets: list[str]) -> dict[str, list[str]]:
    """--set threshold=0.4,0.5 -> {"threshold": ["0.4", "0.5"]}: one value is drawn per batch."""
    from vtc.cli.compress import parse_sets

    return {k: [x.strip() for x in v.split(",")] for k, v in parse_sets(sets).items()}


@app.command(
    epilog=examples(
        "vtc train --data train.json --adapter projector --tokens feats.pool3.zarr --out runs/p3",
        "vtc train --data qa.jsonl --adapter projector,full --features feats.zarr --method dyntok "
        "--set threshold=0.4,0.45,0.5,0.55,0.6 --out runs/dyntok   # one threshold drawn per batch",
        "vtc train --data qa.jsonl --adapter vq-attn --init runs/dyntok --features feats.zarr --method vqtoken "
        "--set k=32 --out runs/vq   # VQ-Attention alone, on top of a trained run",
        "accelerate launch --multi_gpu --num_processes 2 -m vtc train ...   # data-parallel, 2 GPUs",
        note="Evaluate with `vtc eval mcq --data test/ --tokens feats.pool3.zarr --adapter runs/p3`. Re-running "
        "the same command resumes from RUN/checkpoint with the same losses as an uninterrupted run; "
        "--max-seconds stops early with a checkpoint.",
    )
)
def train(
    data: Annotated[
        Path, typer.Option(help="LLaVA-Video-178K JSON/JSONL, or an mcq question file (or its dir).")
    ],
    adapter: Annotated[
        str,
        typer.Option(
            help="Adapters to train, comma-separated: projector, lora, full, marker, vq-attn, cross-dynamics."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory (checkpoints, log, adapter, loss.png).")
    ],
    model: Annotated[
        str,
        typer.Option(
            help="LLaVA-OneVision or Qwen2.5-VL id or local dir (the base the adapters are trained on)."
        ),
    ] = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    init: Annotated[
        Path | None,
        typer.Option(
            help="A finished run to train on top of: its weights are loaded first and stay frozen "
            "(e.g. vq-attn alone on a projector + LLM run); `vtc eval --adapter` loads both."
        ),
    ] = None,
    tokens: Annotated[
        Path | None, typer.Option(help="Token store (a fixed reduction), or a feature store (stock tokens).")
    ] = None,
    features: Annotated[
        Path | None, typer.Option(help="Feature store, reduced on the fly by --method.")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="Reducer applied to each sample (with --features).")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Reducer parameter KEY=V or KEY=V1,V2,... (one value drawn per batch)."),
    ] = None,
    lora: Annotated[
        str | None,
        typer.Option(
            help="LoRA settings, e.g. r=16,alpha=32,dropout=0,targets=q_proj+v_proj "
            "[r=64, alpha=16, dropout=0.05, every linear layer of the LLM]."
        ),
    ] = None,
    vq_attn: Annotated[
        str | None,
        typer.Option(
            "--vq-attn",
            help="vq-attn settings, e.g. form=official,heads=8 [form=paper (Eq. 6-7), heads=8].",
        ),
    ] = None,
    cross_dynamics: Annotated[
        str | None,
        typer.Option(
            "--cross-dynamics", help="cross-dynamics settings, e.g. heads=4,frames=32 [heads=8, frames=64]."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps [default: --epochs over the data].")
    ] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the data when --steps is not given.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Samples per micro-batch.")] = 1,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-4,
    warmup: Annotated[
        float, typer.Option(help="Linear warm-up, as a fraction of the steps; cosine after.")
    ] = 0.03,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm.")] = 1.0,
    seed: Seed = 0,
    device: Device = "cpu",
    dtype: Annotated[str, typer.Option(help="fp32, or bf16/fp16 autocast on a GPU.")] = "fp32",
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (and at the end).")] = 50,
    eval_data: Annotated[
        Path | None, typer.Option(help="Held-out mcq questions to score during training.")
    ] = None,
    eval_every: Annotated[
        int, typer.Option(help="Score --eval-data every N steps (0: at the end only).")
    ] = 0,
    max_seconds: Annotated[
        float | None, typer.Option(help="Stop after this long, with a checkpoint.")
    ] = None,
    fresh: Annotated[
        bool, typer.Option(help="Discard RUN's checkpoint and log instead of resuming.")
    ] = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Train adapters on stored tokens (no video decoding, no vision tower): loss on the answers only."""
    from vtc.cli.compress import parse_sets
    from vtc.stages.train import TrainOptions, distributed
    from vtc.stages.train import train as run

    if dtype not in ("fp32", "bf16", "fp16"):
        raise VtcError(f"unknown dtype '{dtype}'; valid: fp32, bf16, fp16")
    opt = TrainOptions(
        data=str(data),
        model=model,
        adapters=adapter,
        out=str(out),
        init=str(init) if init else None,
        adapter_options={
            name: parse_sets(text.split(","))
            for name, text in (("lora", lora), ("vq-attn", vq_attn), ("cross-dynamics", cross_dynamics))
            if text
        },
        tokens=str(tokens) if tokens else None,
        features=str(features) if features else None,
        method=method,
        params=parse_value_lists(sets or []),
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        warmup=warmup,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        seed=seed,
        device=device,
        dtype=dtype,
        save_every=max(1, save_every),
        eval_data=str(eval_data) if eval_data else None,
        eval_every=eval_every if eval_data else 0,
        max_seconds=max_seconds,
        fresh=fresh,
    )
    con = console(quiet, json_out)
    s = run(opt, quiet=quiet, console=con)
    if distributed()[0] != 0:  # data-parallel: process 0 reports for all
        return
    if json_out:
        print(json.dumps({k: v for k, v in s.to_dict().items() if k != "losses"}, indent=2))
        return
    last = s.losses[-1] if s.losses else float("nan")
    con.print(
        f"trained {', '.join(f'{k} ({v:,} weights)' for k, v in s.trainable.items())}: step {s.steps}/{s.total_steps}, "
        f"loss {last:.4f}, {s.samples} samples"
        + (f", {s.missing_videos} without their video" if s.missing_videos else ""),
        highlight=False,
    )
    for e in s.eval[-1:]:
        con.print(f"held-out accuracy {e['accuracy']:.1f}% " + json.dumps(e["per_category"]), highlight=False)
    if s.stopped_early:
        con.print("[yellow]stopped at --max-seconds[/]; re-run the same command to resume", highlight=False)
    con.print(f"run: {out}", highlight=False)
