"""`vtc demo`: the whole pipeline, offline, in about a minute."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Quiet, console


@app.command(epilog="Example:\n\n  vtc demo --workdir /tmp/vtc-demo")
def demo(
    workdir: Annotated[Path, typer.Option(help="Where checkpoints, videos, stores and results go.")] = Path(
        "vtc-demo"
    ),
    frames: Annotated[int, typer.Option(help="Frames sampled per video.")] = 8,
    quiet: Quiet = False,
) -> None:
    """Synthesise videos, build tiny random SigLIP/LLaVA-OV checkpoints, then extract → compress
    (none, pool, dyntok) → eval a 3-question Video-MME-format task, and print the results table."""
    from vtc.stages.demo import demo as run

    run(workdir, frames=frames, quiet=quiet, console=console(quiet))
