"""`vtc flops`: analytic LLM FLOPs (prefill / decode) and reduction-module FLOPs for a token count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vtc.cli.app import app
from vtc.cli.options import Json, console, examples


@app.command(
    epilog=examples(
        "vtc flops   # 0.5B on 32 frames of stock tokens (32*196+1)",
        "vtc flops --model llava-hf/llava-onevision-qwen2-7b-ov-hf --visual 3098",
        "vtc flops --tokens feats.dyntok-1a2b.zarr   # mean per video of a store",
        "vtc flops --visual 6273 --fastv-k 2 --fastv-r 1568   # FastV",
        "vtc flops --visual 3098 --dycoke-l 3 --dycoke-p 0.7  # DyCoke decode",
        "vtc flops --visual 6273 --online pdrop --set layers=6,12,18  # any in-LLM method",
        note="FLOPs = 2 x multiply-adds of the matmuls, causal attention counted exactly; norms, RoPE, "
        "softmax and activations are left out. 'paper' is FastV's / DyCoke's Eq. 8 on the same "
        "tokens (one FLOP per multiply-add, n^2 attention); 'stock' is LLaVA-OV's F*196+1 tokens. Known "
        "LLaVA-OV ids work offline.",
    ),
)
def flops(
    model: Annotated[
        str,
        typer.Option(
            help="LLaVA-OneVision, Qwen2.5-VL (or Qwen2) Hugging Face id or local dir; only its config is read."
        ),
    ] = "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    visual: Annotated[
        int | None, typer.Option(help="Visual tokens in the prompt (default: stock LLaVA-OV, F*196+1).")
    ] = None,
    text: Annotated[int, typer.Option(help="Text tokens in the prompt (system, question, options).")] = 64,
    new: Annotated[
        int, typer.Option(help="Tokens generated (Video-MME's max_new_tokens is 16); 1 = prefill only.")
    ] = 16,
    tokens: Annotated[
        Path | None,
        typer.Option("--tokens", "-t", help="Token store: visual tokens and module FLOPs, mean per video."),
    ] = None,
    frames: Annotated[
        int, typer.Option(help="Frames of the stock reference F*196+1 (without --tokens).")
    ] = 32,
    fastv_k: Annotated[int | None, typer.Option(help="FastV: from this LLM layer on ...")] = None,
    fastv_r: Annotated[
        int | None, typer.Option(help="FastV: ... only this many visual tokens remain.")
    ] = None,
    dycoke_l: Annotated[int | None, typer.Option(help="DyCoke KV pruning: decode layers >= L ...")] = None,
    dycoke_p: Annotated[
        float | None, typer.Option(help="DyCoke KV pruning: ... see (1-P) of the visual tokens.")
    ] = None,
    online: Annotated[
        str | None, typer.Option(help="Any in-LLM method (`vtc eval list-online`), with its --set values.")
    ] = None,
    settings: Annotated[
        list[str] | None, typer.Option("--set", help="Online method parameter KEY=VALUE (repeatable).")
    ] = None,
    json_out: Json = False,
) -> None:
    """Analytic FLOPs of the LLM (prefill, decode) plus the reduction module's own, vs the stock model (a token store: its family's stock count)."""
    from vtc.cli.compress import parse_sets
    from vtc.eval.flops import flops_report

    r = flops_report(
        model,
        n_text=text,
        n_new=new,
        n_visual=visual,
        tokens=tokens,
        frames=frames,
        fastv_k=fastv_k,
        fastv_r=fastv_r,
        dycoke_l=dycoke_l,
        dycoke_p=dycoke_p,
        online=online,
        online_params=parse_sets(settings or []),
    )
    if json_out:
        print(json.dumps(r, indent=2, default=str))
        return
    con = console()
    con.print(flops_table(r))
    s = r["shape"]
    con.print(
        f"LLM: L={s['layers']} d={s['hidden']} m={s['intermediate']} heads={s['heads']}/{s['kv_heads']} "
        f"head_dim={s['head_dim']} vocab={s['vocab']} (sizes from {r['shape_source']})",
        highlight=False,
        markup=False,
    )
    if r.get("module_recorded") is False:
        con.print("[yellow]some videos have no recorded module FLOPs (counted as 0)[/]")


def _t(x: float) -> str:
    return f"{x / 1e12:.3f}"


def _g(x: float) -> str:
    return f"{x / 1e9:.3g}" if x else "0"


def _n(x) -> str:
    return f"{x:.1f}" if isinstance(x, float) else str(x)


def flops_table(r: dict):
    """Rows: this prompt, stock LLaVA-OV, and the papers' formula; TFLOPs per video (or per prompt),
    module FLOPs in GFLOPs (they are small)."""
    from rich.table import Table

    where = f"{r['tokens']} ({r['videos']} videos, mean)" if "tokens" in r else r["model"]
    from vtc.stages.report import method_label

    pr = ", ".join(
        method_label(v, "online") if k == "online" else f"{k}={v}" for k, v in r["pruning"].items()
    )
    t = Table(
        title=f"vtc flops (TFLOPs) — {where}\n{r['n_text']} text tokens, {r['n_new']} generated"
        + (f"; online pruning {pr}" if pr else "")
    )
    t.add_column("tokens", style="bold", no_wrap=True)
    # fits 80 columns: TFLOPs with 3 decimals, module in GFLOPs ("mod GF"), ratio = total / stock total
    for col in ("visual", "prefill", "decode", "LLM", "mod GF", "total", "ratio"):
        t.add_column(col, justify="right", no_wrap=True, min_width=6)
    label = "method" if "tokens" in r else "given"
    llm, st, pa = r["llm"], r["stock"], r["paper"]
    t.add_row(
        label,
        _n(r["n_visual"]),
        _t(llm["prefill"]),
        _t(llm["decode"]),
        _t(llm["total"]),
        _g(r["module"]),
        _t(r["total"]),
        f"{100 * r['ratio']:.1f}%",
    )
    t.add_row(
        "stock",
        _n(r["stock_visual"]),
        _t(st["prefill"]),
        _t(st["decode"]),
        _t(st["total"]),
        "0",
        _t(st["total"]),
        "100.0%",
    )
    t.add_row(
        "paper",
        str(round(r["n_visual"])),
        _t(pa["prefill"]),
        _t(pa["decode"]),
        _t(pa["total"]),
        "-",
        "-",
        "-",
    )
    return t
