"""`vtc viz`: one video's reduction plans, from one or more token stores, drawn over its frames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Json, examples
from vtc.errors import warn


@app.command(
    epilog=examples(
        "vtc viz vid_0001 --tokens feats.dyntok-1a2b.zarr --out dyntok.png",
        "vtc viz vid_0001 -t f.dyntok.zarr,f.vqtoken.zarr --max-frames 4 -o cmp.png",
        note="Each store is a row, each frame a column: pruned cells dimmed and hatched, merged groups "
        "outlined (dot = representative, other members greyed), clusters across frames in one colour per "
        "token, own tokens untouched; the strip under a frame counts the tokens it contributes.",
    )
)
def viz(
    video_id: Annotated[str, typer.Argument(help="Video id, as in the stores (`vtc info STORE`).")],
    tokens: Annotated[
        list[str],
        typer.Option(
            "--tokens", "-t", help="Token stores of one feature store, comma-separated or repeated."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    max_frames: Annotated[
        int, typer.Option("--max-frames", min=1, help="At most this many frames (columns), evenly picked.")
    ] = 8,
    tile: Annotated[int, typer.Option(min=32, help="Width of one frame in pixels.")] = 160,
    json_out: Json = False,
) -> None:
    """Draw which frame cells each store pruned, merged or clustered for one video, into a PNG."""
    from vtc.stages.viz import viz as run

    stores = [s.strip() for t in tokens for s in t.split(",") if s.strip()]
    r = run(video_id, stores, out, max_frames=max_frames, tile=tile)
    for note in r.notes:
        warn(note)
    if json_out:
        print(json.dumps(r.to_dict(), indent=2))
        return
    # plain print: a label is one line however narrow the terminal, for grep and for the eye
    w, h = r.size
    print(f"wrote {r.out} ({w}x{h} px, {len(r.frames)} frames)")
    for store, label in zip(stores, r.labels, strict=True):
        print(f"  {store}: {label}")
