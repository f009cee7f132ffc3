"""`vtc prepare`: stage a downloaded benchmark as a local task for `vtc eval --data`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.evaluate import eval_app
from vtc.cli.options import Json, Quiet, console, examples

EPILOG = examples(
    "vtc prepare videomme --from ~/hf/Video-MME --out ~/data/videomme-local",
    "vtc prepare mvbench --from ~/hf/MVBench --out mvb/ && vtc extract mvb/videos.csv --store mvb.zarr",
    "vtc eval mvbench --tokens mvb.pool-1a2b.zarr --data mvb/",
    note="Tasks: videomme, videomme_w_subtitle, mvbench, nextqa, longvideobench, mlvu, perceptiontest, "
    "egoschema, mcq. SRC is the dataset's Hugging Face repo with its zips unpacked (see README, "
    "'Benchmarks: staging a local copy'). Writes OUT/<task>.jsonl, OUT/videos.csv (video_id,path for "
    "`vtc extract`), OUT/prepare.json and, for Video-MME, OUT/subtitles/.",
)


@app.command(name="prepare", epilog=EPILOG)
@eval_app.command(name="prepare", epilog=EPILOG)
def prepare(
    task: Annotated[str, typer.Argument(help="Local task format to write (videomme, mvbench, nextqa, ...).")],
    src: Annotated[
        Path, typer.Option("--from", help="Downloaded copy of the benchmark (annotation files and videos).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the local task to.")],
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Convert a downloaded benchmark into a local task directory and a video manifest."""
    from vtc.stages.prepare import prepare as run

    con = console(quiet, json_out)
    done = run(task, src, out)
    summary = json.loads((done / "prepare.json").read_text())
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    con.print(
        f"{task}: {summary['questions']} questions, {summary['videos']} videos "
        f"({summary['videos_missing']} missing), {summary['subtitles']} subtitle files -> {done}",
        highlight=False,
    )
    if summary["videos_missing"]:
        con.print(f"missing videos, e.g.: {', '.join(summary['missing_examples'][:5])}", highlight=False)
    con.print(f"next: vtc extract {done / 'videos.csv'} --store FEATS.zarr", highlight=False)
