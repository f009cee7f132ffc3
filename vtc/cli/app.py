"""`vtc` entry point: the typer app and the one-line error handling every verb shares."""

from __future__ import annotations

import os
import sys

import typer

from vtc.cli.options import examples

app = typer.Typer(
    name="vtc",
    help=(
        "Visual token compression for video LLMs: extract vision-tower features once, compress them with "
        "any method, evaluate LLaVA-OneVision or Qwen2.5-VL on the result through lmms-eval.\n\n"
        "Pipeline: vtc extract VIDEOS --store feats.zarr → vtc compress feats.zarr --method dyntok "
        "→ vtc eval videomme --tokens feats.dyntok-….zarr → vtc report RUNS --out DIR. Try `vtc demo "
        "--quick` first (offline, under a minute)."
    ),
    epilog=examples(
        "vtc demo --workdir /tmp/vtc-demo          # the whole pipeline offline, about 3 minutes",
        "vtc compress --list                       # the methods, one line each",
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register() -> None:
    # Imported here so each module stays a plain list of commands; none imports torch at import time.
    from vtc.cli import compress, demo, evaluate, extract, flops, info, prepare, report, train, viz  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a VtcError (or bad input) becomes one red line and exit code 2."""
    from vtc.errors import VtcError

    _register()
    try:
        rc = app(args=argv, standalone_mode=False)  # click returns typer.Exit's code here
        if rc == 130:  # typer turns Ctrl-C into exit code 130 before it reaches the except below
            raise KeyboardInterrupt
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except VtcError as e:
        if os.environ.get("VTC_DEBUG"):
            raise
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted; re-run the same command to resume", fg="yellow", err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors and anything unexpected
        usage, abort, no_args = _click_exceptions()
        if isinstance(e, no_args):  # `vtc VERB` with no arguments: that verb's help
            typer.echo(e.ctx.get_help())
            sys.exit(0)
        if isinstance(e, usage):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, abort):
            sys.exit(1)
        raise


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage error, abort, no-args-is-help) classes of click and of the click copy typer >= 0.22 vendors."""
    import importlib

    found: dict[str, list[type]] = {"ClickException": [], "Abort": [], "NoArgsIsHelpError": []}
    for name in ("click.exceptions", "typer._click.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for cls in found:
            if isinstance(getattr(mod, cls, None), type):
                found[cls].append(getattr(mod, cls))
    return tuple(found["ClickException"]), tuple(found["Abort"]), tuple(found["NoArgsIsHelpError"])
