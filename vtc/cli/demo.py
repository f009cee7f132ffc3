"""`vtc demo`: the whole pipeline, offline, with a tiny model that vtc trains on a synthetic task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Quiet, Verbose, console, examples


@app.command(
    epilog=examples(
        "vtc demo --workdir /tmp/vtc-demo   # then open /tmp/vtc-demo/report/report.html",
        "vtc demo --quick                   # 3 methods, 32 held-out videos",
        "vtc demo --family qwen2.5-vl --quick  # the same on a tiny Qwen2.5-VL (qwen-* files, same report)",
    )
)
def demo(
    workdir: Annotated[
        Path, typer.Option(help="Where the model, videos, stores, run and results go.")
    ] = Path("vtc-demo"),
    quick: Annotated[bool, typer.Option(help="Fewer methods and held-out videos (about a minute).")] = False,
    family: Annotated[
        str, typer.Option(help="Model family of the tiny model: llava-onevision or qwen2.5-vl.")
    ] = "llava-onevision",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Synthesise a video-QA set whose answers depend on the pixels, extract features, train a tiny
    LLaVA-OV on cached tokens, then compress with several methods and print held-out accuracy per
    question type next to the visual tokens each method keeps."""
    from vtc.stages.demo import demo as run

    con = console(quiet)
    results = run(workdir, quick=quick, quiet=quiet, verbose=verbose, console=con, family=family)
    con.print(accuracy_table(results))


def accuracy_table(results: list[dict]):
    """method | visual tokens | accuracy overall and per question type | TTFT, one row per evaluation."""
    from rich import box
    from rich.table import Table

    from vtc.reducers.registry import method_label

    kinds = {"colour": "colour", "frequency": "freq", "order": "order", "count": "count", "direction": "dir"}
    t = Table(
        title="vtc demo — held-out accuracy (%) of the trained tiny model, chance = 25",
        caption="colour: one frame suffices; freq, order, count, dir: several frames are needed; TTFT: ms per batch of 16",
        box=box.SIMPLE_HEAD,
    )
    t.add_column("method", min_width=16, max_width=24, overflow="fold")
    for col in ("tokens", "all", *kinds.values(), "TTFT"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in results:
        name = method_label(r["method"])
        adapters = (r.get("adapter") or {}).get("adapters") or []
        if not r.get("adapter"):
            name += " (untrained)"
        elif "vq-attn" in adapters:
            name += " + vq-attn"
        per = r.get("per_category", {})
        ttft = ((r.get("measured") or {}).get("ttft_s") or {}).get("median")
        t.add_row(
            name,
            f"{r['visual_tokens']['mean']:.0f}",
            f"{r['accuracy']:.0f}",
            *(f"{_acc(per.get(k)):.0f}" if k in per else "-" for k in kinds),
            f"{1000 * ttft:.0f}" if ttft is not None else "-",
        )
    return t


def _acc(v) -> float:
    return float(v["accuracy"] if isinstance(v, dict) else v)
