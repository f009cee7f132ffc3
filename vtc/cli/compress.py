"""`vtc compress`: a feature store → a token store, with any registered reducer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Json, Quiet, Seed, console, print_problems
from vtc.errors import VtcError


def parse_sets(sets: list[str]) -> dict[str, str]:
    out = {}
    for s in sets:
        if "=" not in s:
            raise VtcError(f"--set takes key=value, got {s!r}")
        k, v = s.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@app.command(
    epilog=(
        "Examples:\n\n"
        "  vtc compress feats.zarr --method dyntok --set threshold=0.5\n\n"
        "  vtc compress feats.zarr --method pool --set stride=3 --out feats.pool3.zarr\n\n"
        "  vtc compress feats.zarr --method tome --budget 1024          # exactly 1024 visual tokens per video\n\n"
        "  vtc compress --list\n\n"
        "Without --out the token store is named by content: <store>.<method>-<config hash>.zarr."
    )
)
def compress(
    store: Annotated[Path | None, typer.Argument(help="Feature store written by `vtc extract`.")] = None,
    method: Annotated[str, typer.Option("--method", "-m", help="Reducer name (see --list).")] = "none",
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="Method parameter key=value (repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Token store to write.")] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            help="Fixed-length mode: exactly this many visual tokens per video (methods marked budget)."
        ),
    ] = None,
    seed: Seed = 0,
    device: Annotated[str, typer.Option(help="torch device the reducer runs on (cpu, cuda, ...).")] = "cpu",
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Videos reduced per call (1 = one at a time; default 8 on an accelerator, 1 on the CPU, "
            "where batching measured slower); the output is the same for any value.",
        ),
    ] = None,
    list_methods: Annotated[
        bool, typer.Option("--list", help="List the methods and their parameters.")
    ] = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Reduce every video's tokens and store the plan, the tokens, their positions and exact counts."""
    con = console(quiet, json_out)
    if list_methods:
        _print_methods(con, json_out)
        return
    if store is None:
        raise VtcError("give a feature store (or --list to see the methods)")
    from vtc.stages.compress import compress as run

    params = parse_sets(sets or [])
    if budget is not None:
        from vtc.reducers import list_reducers

        cls = list_reducers().get(method)
        if cls is not None and not cls.info.budget:
            fixed = ", ".join(n for n, c in list_reducers().items() if c.info.budget)
            raise VtcError(f"method {method} has no fixed-length mode; --budget works with: {fixed}")
        params["budget"] = str(budget)
    s = run(
        store,
        method,
        params,
        out=out,
        seed=seed,
        device=device,
        quiet=quiet,
        console=con,
        batch_size=batch_size,
    )
    print_problems(s.failed)
    if json_out:
        print(json.dumps(s.to_dict(), indent=2))
    else:
        _print_summary(con, s)
    if s.failed:
        raise typer.Exit(1)


def _print_summary(con, s) -> None:
    from rich.table import Table

    t = Table(title=f"compress {s.method['method']} → {s.out}")
    for col in (
        "videos done",
        "skipped (already done)",
        "tokens in",
        "LLM tokens",
        "of input",
        "of stock LLaVA-OV",
    ):
        t.add_column(col, justify="right")
    t.add_row(
        str(s.done),
        str(s.skipped),
        f"{s.tokens_in:,}",
        f"{s.llm_tokens:,}",
        f"{100 * s.retained:.2f}%",
        f"{100 * s.vs_stock:.2f}%",
    )
    con.print(t)
    con.print(f"config: {json.dumps(s.method)}", highlight=False)


def _print_methods(con, json_out: bool) -> None:
    import dataclasses

    from vtc.reducers import list_reducers
    from vtc.reducers.batch import natively_batched

    rows = []
    for name, cls in list_reducers().items():
        doc = (cls.__doc__ or "").strip().splitlines()
        info = cls.info
        rows.append(
            {
                "method": name,
                "description": doc[0] if doc else "",
                "paper": info.paper,
                "parameters": {f.name: f.default for f in dataclasses.fields(cls)},
                "needs_training": info.training,
                "fixed_budget": info.budget,
                "licence": info.licence,
                "batched": natively_batched(cls),
            }
        )
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
        return
    from rich.table import Table

    t = Table(title=f"vtc compress methods ({len(rows)})")
    t.add_column("method", style="bold")
    t.add_column("description")
    t.add_column("paper")
    t.add_column("parameters (defaults)")
    t.add_column("notes")
    for r in rows:
        notes = ["needs training" if r["needs_training"] else "training-free"]
        if r["fixed_budget"]:
            notes.append("--set budget=M")
        notes.append("batched" if r["batched"] else "one video per call")
        if r["licence"]:
            notes.append(r["licence"])
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items())
        t.add_row(r["method"], r["description"], r["paper"], params or "-", "; ".join(notes))
    con.print(t)
