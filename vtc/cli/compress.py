"""`vtc compress`: a feature store → a token store, with any registered reducer."""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Json, Quiet, RayAddress, Seed, console, examples, print_problems
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
    epilog=examples(
        "vtc compress feats.zarr --method dyntok --set threshold=0.5",
        "vtc compress feats.zarr --method pool --set stride=3 --out feats.pool3.zarr",
        "vtc compress feats.zarr --method tome --budget 1024          # exactly 1024 visual tokens per video",
        "vtc compress --list            # every method, one line each; --list dyntok: the details",
        note="Without --out the token store is named by content: <store>.<method>-<config hash>.zarr.",
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
        bool,
        typer.Option("--list", help="List the methods, one line each; `--list NAME`: one method's details."),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="local (this machine) or ray (Ray Data tasks, one batch of videos each; pip install "
            "'vtc\\[ray]'). The token store is the same."
        ),
    ] = "local",
    address: RayAddress = None,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Reduce every video's tokens and store the plan, the tokens, their positions and exact counts."""
    con = console(quiet, json_out)
    if list_methods:  # `--list NAME`: NAME arrives as the store argument
        _print_methods(con, json_out, None if store is None else str(store))
        return
    if store is None:
        raise VtcError("give a feature store (or --list to see the methods)")
    from vtc.stages.compress import CompressOptions

    if engine not in ("local", "ray"):
        raise VtcError(f"unknown engine '{engine}'; valid: local, ray")
    if engine == "ray":
        from vtc.stages.compress_ray import compress as run_ray

        run = functools.partial(run_ray, address=address)
    elif address is not None:
        raise VtcError("--address is for --engine ray")
    else:
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
        CompressOptions(store, method, params, out=out, seed=seed, device=device, batch_size=batch_size),
        quiet=quiet,
        console=con,
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
        "of stock",
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


def _method_row(name: str, cls) -> dict:
    import dataclasses

    from vtc.reducers.base import closed_sets
    from vtc.reducers.batch import natively_batched

    info, closed = cls.info, closed_sets(cls)
    return {
        "method": name,
        "summary": info.summary,
        "paper": info.paper,
        "section": info.section,
        "tokens": "adaptive" if info.adaptive else "fixed",
        "fixed_budget": info.budget,
        "needs_training": info.training,
        "needs": list(info.needs),
        "licence": info.licence,
        "batched": natively_batched(cls),
        "parameters": {
            f.name: {"default": f.default, "meaning": info.meaning(f.name)}
            | ({"choices": list(closed[f.name])} if f.name in closed else {})
            for f in dataclasses.fields(cls)
        },
        "notes": inspect.cleandoc(cls.__doc__ or ""),
    }


def _print_methods(con, json_out: bool, name: str | None = None) -> None:
    """One line per method (fits 80 columns), or one method's details; --json for scripts."""
    from vtc.reducers import list_reducers

    reducers = list_reducers()
    if name is not None:
        if name not in reducers:
            raise VtcError(f"unknown method {name!r}; valid: {', '.join(reducers)}")
        row = _method_row(name, reducers[name])
        if json_out:
            print(json.dumps(row, indent=2, default=str))
        else:
            _print_method(con, row)
        return
    rows = [_method_row(n, c) for n, c in reducers.items()]
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
        return
    say = functools.partial(con.print, highlight=False, markup=False)
    say(f"{'method':<14}{'what it does':<39}{'tokens':<10}{'budget':<8}training")
    for r in rows:
        say(
            f"{r['method']:<14}{r['summary']:<39}{r['tokens']:<10}{'yes' if r['fixed_budget'] else '-':<8}"
            f"{'yes' if r['needs_training'] else '-'}"
        )
    say(
        "tokens: fixed = a set count per video, adaptive = follows the content; budget: --budget M gives "
        "exactly M; training: the full method has a trained adapter (vtc train). Details: vtc compress "
        "--list METHOD"
    )


def _print_method(con, r: dict) -> None:
    from rich.markup import escape

    say = functools.partial(con.print, highlight=False)
    say(f"[bold]{r['method']}[/] — {escape(r['summary'])}")
    say(f"[bold]paper[/]      {escape(r['paper'])}" + (f", {escape(r['section'])}" if r["section"] else ""))
    tokens = "adaptive (follows the content)" if r["tokens"] == "adaptive" else "fixed count per video"
    say(
        f"[bold]tokens[/]     {tokens}; --budget M: {'yes' if r['fixed_budget'] else 'no'}; training: "
        + ("the full method has a trained adapter (vtc train)" if r["needs_training"] else "none")
    )
    if r["needs"]:
        say(f"[bold]needs[/]      {', '.join(r['needs'])} per video (vtc extract --save-attention)")
    if r["licence"]:
        say(f"[bold]licence[/]    {escape(r['licence'])}")
    if r["parameters"]:
        say("[bold]parameters[/] (--set key=value)")
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))  # the meanings wrap under themselves, not under the names
        grid.add_column(no_wrap=True)
        grid.add_column()
        for k, v in r["parameters"].items():
            choices = f" (one of: {', '.join(v['choices'])})" if "choices" in v else ""
            grid.add_row(escape(f"  {k}={v['default']}"), escape(v["meaning"] + choices))
        say(grid)
    say("[bold]how it works, and where it differs from the paper and the official code[/]")
    say(escape(_reflow(r["notes"])))
    example = " ".join(f"--set {k}={v['default']}" for k, v in list(r["parameters"].items())[:1])
    say(f"[bold]example[/]    vtc compress feats.zarr --method {r['method']} {example}".rstrip())


def _reflow(doc: str) -> str:
    """Docstring lines joined into paragraphs (list items kept apart) so the terminal wraps them."""
    out: list[str] = []
    for para in doc.split("\n\n"):
        items: list[str] = []
        for line in para.splitlines():
            line = line.strip()
            if items and not line.startswith("- "):
                items[-1] += " " + line
            else:
                items.append(line)
        out.append("\n".join(items))
    return "\n\n".join(out)
