"""`vtc report`: evaluations and training runs → tables, Pareto plots and one self-contained HTML page."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import console, examples


class Format(str, Enum):
    files = "files"
    json = "json"


@app.command(
    epilog=examples(
        "vtc report /tmp/vtc-demo --out demo-report   # every run in a demo workdir",
        "vtc report eval-pool3 eval-dyntok run-1000 --out cmp --format json",
        note="Writes OUT/report.md, report.csv, report.html (self-contained: open it in a browser) and the "
        "plots as PNG and SVG.",
    )
)
def report(
    runs: Annotated[
        list[Path],
        typer.Argument(
            help="Evaluation dirs (results.json), training run dirs (run.json + log.jsonl), or folders "
            "holding them (searched recursively)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the report's files.")] = Path(
        "vtc-report"
    ),
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            help="files: write the files and print the tables; json: write the files and print rows and "
            "paths as JSON on stdout.",
        ),
    ] = Format.files,
) -> None:
    """Compare evaluations side by side: a table per task (accuracy, categories, visual tokens,
    TokDense, FLOPs, TTFT, decode time, memory), accuracy-vs-cost Pareto plots and training loss curves."""
    from vtc.stages.report import report as run
    from vtc.stages.report import rich_tables, to_json

    rep = run(runs, out)
    if fmt is Format.json:
        print(to_json(rep))
        return
    con = console()
    if not con.is_terminal:  # a log file or a pipe: print whole tables rather than 80 columns of them
        con.width = 240
    for t in rich_tables(rep, con.width):
        con.print(t)
    con.print(f"wrote {len(rep.paths)} files to {out}: open {Path(out) / 'report.html'}", highlight=False)
