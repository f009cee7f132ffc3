"""`vtc info`: what a store holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Json, console, examples


@app.command(epilog=examples("vtc info feats.zarr", "vtc info feats.dyntok-1a2b.zarr --json"))
def info(
    store: Annotated[Path, typer.Argument(help="A feature or token store.")],
    json_out: Json = False,
) -> None:
    """Summarise a store: videos, failures, provenance, token counts and size on disk."""
    from vtc.stages.info import store_info

    s = store_info(store)
    if json_out:
        print(json.dumps(s, indent=2, default=str))
        return
    from rich.table import Table

    con = console()
    t = Table(title=f"{s['kind']} store {store}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in s["summary"].items():
        t.add_row(k, str(v))
    con.print(t)
    con.print("[bold]identity[/]", json.dumps(s["identity"], indent=1), highlight=False)
    if s["histogram"]:
        what = "LLM tokens" if s["kind"] == "tokens" else "frames"
        peak = max(b["count"] for b in s["histogram"])
        con.print(f"[bold]{what} per video[/]")
        for b in s["histogram"]:
            bar = "█" * max(1, round(30 * b["count"] / peak)) if b["count"] else ""
            con.print(f"  {b['lo']:>9} – {b['hi']:<9} {bar} {b['count']}", highlight=False)
    if s["failures"]:
        f = Table(title="failed videos")
        f.add_column("id")
        f.add_column("source")
        f.add_column("reason")
        for e in s["failures"]:
            f.add_row(e["id"], str(e.get("source", "")), e["reason"])
        con.print(f)
