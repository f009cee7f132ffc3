"""`vtc eval`: a video LLM (LLaVA-OneVision, Qwen2.5-VL) on stored tokens, scored by lmms-eval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from vtc.cli.app import app
from vtc.cli.options import Device, Dtype, Json, Quiet, Seed, Verbose, console, examples


class TaskOrCommand(TyperGroup):
    """`vtc eval TASK ...` runs TASK; `vtc eval prepare ...` (a subcommand name) runs that subcommand."""

    default = "run"

    def resolve_command(self, ctx, args):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = [self.default, *args]
        return super().resolve_command(ctx, args)


EPILOG = examples(
    "vtc eval videomme --tokens feats.dyntok-1a2b.zarr --device cuda --dtype bf16",
    "vtc eval videomme --tokens t.zarr --data ~/data/videomme-local --limit 50   # local copy",
    "vtc eval videomme --tokens dycoke.zarr --online dycoke-kv --set p=0.7      # + KV pruning",
    "vtc eval mvbench --tokens t.zarr --data mvbench-local --online fastv --set k=2 --set ratio=0.5",
    "vtc eval my_task --tokens t.zarr --include my_tasks/                        # your lmms-eval YAML",
    "vtc eval videomme --tokens t.zarr --device cuda --processes 4              # 4 GPUs, one process each",
    "accelerate launch --num_processes 4 -m vtc eval videomme --tokens t.zarr --device cuda",
    note="A local copy is a directory with one *.jsonl/*.parquet of questions in the benchmark's row format "
    "(see README; `vtc eval prepare` makes one). Writes OUT/results.json; answers are journalled in "
    "OUT/answers.jsonl, so re-running an interrupted command resumes it. --verbose also shows "
    "lmms-eval's own progress bars and log lines. With --processes N (or N processes of torchrun / accelerate "
    "launch) request i is answered by process i mod N, journalled in OUT/answers.rank{i}-of-{N}.jsonl; the "
    "results equal one process's, and a re-run with any N reuses every journalled answer.",
)
eval_app = typer.Typer(
    epilog=EPILOG,
    cls=TaskOrCommand,
    no_args_is_help=True,
    help=(
        "Evaluate LLaVA-OneVision or Qwen2.5-VL on stored tokens through lmms-eval: `vtc eval TASK --tokens STORE` "
        "(short for `vtc eval run TASK ...`), or stage a benchmark with `vtc eval prepare TASK --from DIR`."
    ),
)
app.add_typer(eval_app, name="eval")


@eval_app.command(
    name="run",
    epilog=EPILOG,
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
            help="Token store from `vtc compress` (or a feature store: the model's stock tokens).",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            help="LLaVA-OneVision or Qwen2.5-VL Hugging Face id or local dir (the checkpoint the features came from)."
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
    online: Annotated[
        str | None,
        typer.Option(
            help="In-LLM pruning method on top of the stored tokens (`vtc eval list-online` lists them: fastv, pdrop, sparsevlm, ...)."
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Online method parameter KEY=VALUE (repeatable), e.g. --set p=0.7."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(help="Questions per forward pass (left-padded); online methods need 1.")
    ] = 1,
    max_new_tokens: Annotated[
        int, typer.Option(help="Cap on generated tokens when the task sets none.")
    ] = 16,
    log_samples: Annotated[
        bool, typer.Option(help="Also write OUT/samples.jsonl: every prompt, response and score.")
    ] = False,
    fresh: Annotated[
        bool, typer.Option(help="Discard answers journalled in OUT by an earlier run instead of resuming.")
    ] = False,
    adapter: Annotated[
        Path | None,
        typer.Option(help="A `vtc train` run directory: its trained weights are loaded into --model."),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            help="Answer in N processes (request i in process i mod N; with --device cuda process i uses "
            "cuda:i); the results are those of one process."
        ),
    ] = 1,
    quiet: Quiet = False,
    verbose: Verbose = False,
    json_out: Json = False,
) -> None:
    """Answer TASK's questions from stored tokens; report accuracy, visual tokens, TokDense, FLOPs, latency."""
    from vtc.cli.compress import parse_sets
    from vtc.stages.evaluate import EvalOptions
    from vtc.stages.evaluate import evaluate as run
    from vtc.stages.report import results_table

    con = console(quiet, json_out)
    if batch_size < 1:
        raise typer.BadParameter("--batch-size must be >= 1")
    if processes < 1:
        raise typer.BadParameter("--processes must be >= 1")
    r = run(
        EvalOptions(
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
            verbose=verbose,
            online=online,
            online_params=parse_sets(settings or []),
            batch_size=batch_size,
            log_samples=log_samples,
            fresh=fresh,
            max_new_tokens=max_new_tokens,
            adapter=adapter,
            processes=processes,
        ),
        quiet=quiet,
        console=con,
    )
    if r is None:  # a rank other than 0 of a torchrun / accelerate launch: rank 0 reports
        return
    if json_out:
        print(json.dumps({k: v for k, v in r.items() if k != "samples"}, indent=2, default=str))
        return
    con.print(results_table([r]))
    con.print(f"results: {out / 'results.json'}", highlight=False)


@eval_app.command(name="list-online", epilog=examples("vtc eval list-online", "vtc eval list-online --json"))
def list_online_methods(json_out: Json = False) -> None:
    """List the in-LLM (online) pruning methods `--online` accepts, with their parameters and defaults."""
    from rich.table import Table

    from vtc.eval.online import list_online

    methods = list_online()
    if json_out:
        print(json.dumps(methods, indent=2, default=str))
        return
    t = Table(title="online methods (vtc eval TASK --tokens STORE --online NAME --set KEY=VALUE)")
    for col in ("name", "phase", "parameters (defaults)", "description"):
        t.add_column(col, overflow="fold")
    for name, m in methods.items():
        params = ", ".join(f"{k}={v}" for k, v in m["params"].items())
        t.add_row(name, m["phase"], params, f"{m['description']}\n[dim]{m['paper']}[/]")
    console().print(t)
