"""Options shared by several verbs, defined once."""

from __future__ import annotations

from typing import Annotated

import typer

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Also show the libraries' own progress bars and log lines.")
]
Json = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
Device = Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1, ...")]
Dtype = Annotated[str, typer.Option(help="compute dtype: fp32, fp16 or bf16.")]
Seed = Annotated[int, typer.Option(help="random seed (results are identical for equal seeds).")]
RayAddress = Annotated[
    str | None,
    typer.Option(
        help="--engine ray: the cluster, auto (the one running on this node) or ray://HOST:10001 "
        "\\[default: a local Ray started for the run]."
    ),
]


def examples(*lines: str, note: str = "") -> str:
    """A command's help epilog: the ``note`` first, then the examples, last, where a reader looks."""
    return (note + "\n\n" if note else "") + "Examples:\n\n" + "\n\n".join(f"  {x}" for x in lines)


def console(quiet: bool = False, json_out: bool = False):
    """Rich console for human output; with --json it goes to stderr so stdout stays parseable."""
    from rich.console import Console

    return Console(stderr=json_out, quiet=quiet)


def print_problems(failed: list[dict], warnings: list[str] = ()) -> None:
    """One stderr line per warning and per failed video, even with --quiet or --json: a script must see
    what was skipped."""
    from rich.console import Console

    err = Console(stderr=True)
    for w in warnings:
        err.print(f"[yellow]warning[/] {w}", highlight=False)
    for f in failed:
        where = f" ({f['path']})" if f.get("path") else ""
        err.print(f"[red]failed[/] {f['id']}{where}: {f['reason']}", highlight=False)
