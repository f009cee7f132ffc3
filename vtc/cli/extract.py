"""`vtc extract`: videos → vision-tower features in a zarr store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Device, Dtype, Json, Quiet, RayAddress, console, examples, print_problems


@app.command(
    epilog=examples(
        "vtc extract videos/ --store feats.zarr                 # 32 frames/video, LLaVA-OV-0.5B tower",
        "vtc extract 'clips/**/*.mp4' --store f.zarr --fps 1 --max-frames 64",
        "vtc extract manifest.csv --store f.zarr --model google/siglip-so400m-patch14-384 --device cuda --dtype bf16",
        "vtc extract videos/ --store q.zarr --model Qwen/Qwen2.5-VL-7B-Instruct --max-pixels 401408 --device cuda",
        "vtc extract /shared/videos --store /shared/f.zarr --engine ray --address auto --device cuda  # a Ray cluster",
        note="Re-running the same command resumes: done videos are skipped. Exit code 1 if any video failed.",
    ),
)
def extract(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Video files, directories (recursive), globs, or a .csv/.jsonl manifest of video_id,path."
        ),
    ],
    store: Annotated[Path, typer.Option("--store", "-s", help="Feature store to create or append to.")],
    model: Annotated[
        str,
        typer.Option(
            help="Hugging Face id or local dir: a LLaVA-OneVision or Qwen2.5-VL checkpoint (its tower), or a "
            "SigLIP vision model."
        ),
    ] = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    frames: Annotated[
        int, typer.Option(help="Frames per video, uniform over the whole video (LLaVA-OV style).")
    ] = 32,
    fps: Annotated[
        float | None, typer.Option(help="Sample at this many frames per second instead of --frames.")
    ] = None,
    max_frames: Annotated[
        int, typer.Option(help="Cap for --fps sampling (then uniform over the video).")
    ] = 64,
    backend: Annotated[str, typer.Option(help="Decoder: decord or pyav.")] = "decord",
    layer: Annotated[
        int | None,
        typer.Option(
            help="Hidden layer to store [default: the checkpoint's vision_feature_layer; -2 for bare SigLIP]."
        ),
    ] = None,
    save_attention: Annotated[
        bool,
        typer.Option(help="Also store each token's received attention in the stored layer (for visionzip)."),
    ] = False,
    min_pixels: Annotated[
        int | None,
        typer.Option(
            help="Qwen2.5-VL: least frame area after resize [default: 128*28*28, its video processor's]."
        ),
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(help="Qwen2.5-VL: largest frame area after resize [default: 768*28*28]."),
    ] = None,
    device: Device = "cpu",
    dtype: Dtype = "fp32",
    batch_size: Annotated[int, typer.Option(help="Frames per forward pass of the tower.")] = 16,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Decode processes \\[default: cores - 1, at least 1]; the store is the same whatever the number."
        ),
    ] = None,
    storage_dtype: Annotated[
        str, typer.Option(help="float16 or float32 (zarr has no bfloat16).")
    ] = "float16",
    timeout: Annotated[
        float, typer.Option(help="Seconds one video may take to decode before it is skipped (0: no limit).")
    ] = 120.0,
    engine: Annotated[
        str,
        typer.Option(
            help="local (this machine) or ray (a Ray Data pipeline: decode tasks, encoder actors; pip install "
            "'vtc\\[ray]'). The store is the same."
        ),
    ] = "local",
    address: RayAddress = None,
    actors: Annotated[
        int | None,
        typer.Option(
            help="--engine ray: encoder actors \\[default: one per GPU in the cluster with --device cuda, "
            "else 1]; --workers is then the number of decode tasks at once \\[default: cluster CPUs - actors]."
        ),
    ] = None,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Decode videos, sample frames, run the vision tower and write its features per video: [F, 729, 1152]
    for LLaVA-OV-0.5B, Qwen2.5-VL's merger tokens [F/2, h*w, D] on each video's own grid."""
    from vtc.errors import VtcError
    from vtc.stages.extract import ExtractOptions

    if engine not in ("local", "ray"):
        raise VtcError(f"unknown engine '{engine}'; valid: local, ray")
    if engine == "local" and (address is not None or actors is not None):
        raise VtcError("--address and --actors are for --engine ray")
    if engine == "ray":
        import functools

        from vtc.stages.extract_ray import extract as run_ray

        run = functools.partial(run_ray, address=address, actors=actors)
    else:
        from vtc.stages.extract import extract as run

    con = console(quiet, json_out)
    s = run(
        ExtractOptions(
            inputs,
            store,
            model=model,
            frames=frames,
            fps=fps,
            max_frames=max_frames,
            backend=backend,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            storage_dtype=storage_dtype,
            layer=layer,
            save_attention=save_attention,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            workers=workers,
            timeout=timeout or None,
        ),
        quiet=quiet,
        console=con,
    )
    print_problems(s.failed, s.warnings)
    if json_out:
        print(json.dumps(s.to_dict(), indent=2))
    else:
        from rich.table import Table

        t = Table(title=f"extract → {store}", show_header=True)
        for col in ("done", "skipped (already done)", "failed", "frames", "frames/s", "decode workers"):
            t.add_column(col, justify="right")
        t.add_row(
            str(s.done),
            str(s.skipped),
            str(len(s.failed)),
            str(s.frames),
            f"{s.frames_per_s:.1f}",
            str(s.workers),
        )
        con.print(t)
    if s.failed:
        raise typer.Exit(1)
