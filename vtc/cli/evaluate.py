"""`vtc eval`: LLaVA-OneVision on stored tokens, scored by lmms-eval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Device, Dtype, Json, Quiet, Seed, console


@app.command(
    name="eval",
    epilog=(
        "Examples:\n\n"
        "  vtc eval videomme --tokens feats.dyntok-1a2b.zarr --device cuda --dtype bf16\n\n"
        "  vtc eval videomme --tokens t.zarr --data ~/data/videomme-local --limit 50   # local copy\n\n"
        "  vtc eval my_task --tokens t.zarr --include my_tasks/                        # your lmms-eval YAML\n\n"
        "A local copy is a directory with one *.jsonl/*.parquet of questions in the benchmark's row format "
        "(see README). Writes OUT/results.json."
    ),
)
def evaluate(
    task: Annotated[
        str, typer.Argument(help="lmms-eval task name (videomme, ...) or, with --data, a local task format.")
    ],
    tokens: Annotated[
        Path,
        typer.Option(
            "--tokens",
            "-t",
            help="Token store from `vtc compress` (or a feature store: stock LLaVA-OV tokens).",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            help="LLaVA-OneVision Hugging Face id or local dir (must match the tower the features came from)."
        ),
    ] = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    data: Annotated[
        Path | None,
        typer.Option(help="Local copy of the task's questions (directory with one .jsonl/.parquet)."),
    ] = None,
    include: Annotated[Path | None, typer.Option(help="Directory of extra lmms-eval task YAMLs.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for results.json.")] = Path("vtc-eval"),
    device: Device = "cpu",
    dtype: Dtype = "fp32",
    seed: Seed = 0,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Answer TASK's questions from stored tokens; report accuracy, visual tokens and TokDense."""
    from vtc.stages.evaluate import evaluate as run

    con = console(quiet, json_out)
    r = run(
        task,
        tokens,
        model,
        data=data,
        include=include,
        limit=limit,
        out=out,
        device=device,
        dtype=dtype,
        seed=seed,
        quiet=quiet,
    )
    if json_out:
        print(json.dumps({k: v for k, v in r.items() if k != "samples"}, indent=2, default=str))
        return
    con.print(results_table([r]))
    con.print(f"results: {out / 'results.json'}", highlight=False)


def results_table(results: list[dict], title: str = "vtc eval"):
    """One row per run; fits 80 columns (method params abbreviated, durations as S/M/L)."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("method", min_width=16, max_width=22, overflow="fold")
    for col in ("n", "acc%", "S/M/L", "tokens", "range", "TokDense", "s"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in results:
        m = r["method"]
        name = m["method"] + "".join(f"\n {k}={v}" for k, v in m.items() if k != "method")
        vt = r["visual_tokens"]
        pd = r.get("per_duration", {})
        dur = "/".join(f"{pd[k]:.0f}" if k in pd else "-" for k in ("short", "medium", "long")) if pd else "-"
        t.add_row(
            name,
            str(r["n_samples"]),
            f"{r['accuracy']:.1f}",
            dur,
            f"{vt['mean']:.1f}",
            f"{vt['min']}-{vt['max']}",
            f"{r['tokdense']:.4f}",
            f"{r['wall_time_s']:.1f}",
        )
    return t
