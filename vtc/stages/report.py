"""Stage 5: one report over many runs: the evaluations' numbers side by side, the trade-off plots, the
training curves.

Inputs are run directories as the other stages write them, or folders holding them (a demo workdir):

- an evaluation: ``results.json`` (``vtc.stages.evaluate``);
- a training run: ``run.json`` and ``log.jsonl`` (``vtc.stages.train``).

``OUT`` receives::

    report.md, report.csv     one table per task: a row per evaluated method (its parameters, online
                              method and adapter run); accuracy, per category or duration, visual tokens,
                              TokDense, FLOPs, TTFT, decode time, peak memory, as results.json has them
    training.csv              per training run: steps, last and lowest loss (only with training runs)
    pareto_tokens.png/.svg    accuracy against visual tokens, FLOPs and TTFT, one panel per task, the
    pareto_flops.png/.svg     Pareto front (fewest of the x quantity for the accuracy) as a step line
    pareto_ttft.png/.svg
    loss.png/.svg             training loss against step (only with training runs)
    report.html               all of the above in one file: the plots are embedded as data URIs

A results.json that is torn, damaged or not vtc's is skipped with one warning naming it.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vtc.cache.jsonl import read_json, read_jsonl
from vtc.errors import VtcError, warn


@dataclass(frozen=True)
class Column:
    key: str  # the CSV/JSON name
    header: str  # the table's
    fmt: Callable[[float], str]


@dataclass
class Row:
    """One evaluation: what ran (label) and its numbers by column key (None: not in its results.json)."""

    task: str
    label: str  # method and changed parameters, online method, adapter run: unique within the task
    method: dict
    adapter: str | None  # the adapter run's directory name
    adapters: list[str]
    online: dict | None
    dir: str
    values: dict[str, float | None]
    memory_kind: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingRun:
    dir: str
    label: str
    adapters: list[str]
    steps: list[int] = field(repr=False)
    losses: list[float] = field(repr=False)
    last_eval: float | None = None  # held-out accuracy of the run's last evaluation, if it had any

    def summary(self) -> dict:
        return {
            "dir": self.dir,
            "label": self.label,
            "adapters": self.adapters,
            "steps": self.steps[-1] if self.steps else 0,
            "last_loss": self.losses[-1] if self.losses else None,
            "min_loss": min(self.losses) if self.losses else None,
            "last_eval_accuracy": self.last_eval,
        }


@dataclass
class Report:
    rows: list[Row]
    training: list[TrainingRun]
    columns: dict[str, list[Column]]  # per task, the columns some row of the task has a value in
    paths: list[str]
    skipped: list[str]

    def to_dict(self) -> dict:
        return {
            "rows": [r.to_dict() for r in self.rows],
            "columns": {
                t: [{"key": c.key, "header": c.header} for c in cols] for t, cols in self.columns.items()
            },
            "training": [t.summary() for t in self.training],
            "paths": self.paths,
            "skipped": self.skipped,
        }

    def tasks(self) -> list[str]:
        return list(self.columns)

    def rows_of(self, task: str) -> list[Row]:
        return [r for r in self.rows if r.task == task]


# ---------------------------------------------------------------------------------------------- formats


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:.{digits}f}"


def _count(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def _sig3(v: float) -> str:
    return f"{v:.3g}"


def _si(v: float) -> str:
    """51.1M, 2.34T: FLOPs span nine orders of magnitude between the tiny model and a 72B one."""
    for scale, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


_PCT = _fixed(1)
# (key, header, format); per-category and per-duration columns go in after accuracy
_BASE = [
    Column("accuracy", "accuracy", _PCT),
    Column("n_samples", "n", _count),
    Column("tokens_mean", "tokens mean", _count),
    Column("tokens_min", "tokens min", _count),
    Column("tokens_max", "tokens max", _count),
    Column("tokens_decode_mean", "decode tokens", _count),
    Column("tokdense", "TokDense", _sig3),
    Column("flops", "FLOPs", _si),
    Column("ttft_ms", "TTFT ms", _sig3),
    Column("decode_ms", "decode ms/tok", _sig3),
    Column("peak_memory_mib", "peak MiB", _fixed(0)),
    Column("samples_per_s", "samples/s", _sig3),
]
_NOTES = (
    "accuracy and categories in %; tokens: visual tokens per sample reaching the LLM (decode tokens: after "
    "online KV pruning); TokDense = accuracy / mean visual tokens; FLOPs: mean per sample, LLM prefill + "
    "decode + the reduction module; TTFT and decode ms/token: median over the samples; peak MiB: "
)
_MEMORY_KINDS = {
    "cuda_max_allocated": "CUDA allocator peak",
    "process_peak_rss": "process peak RSS (weights and Python included)",
}


# ------------------------------------------------------------------------------------------- discovery


def find_runs(paths: Sequence[str | Path], skip: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(evaluation dirs, training run dirs) at or under ``paths``; stores and ``skip`` are not entered."""
    evals: list[Path] = []
    trains: list[Path] = []
    seen: set[Path] = set()

    def visit(d: Path) -> bool:
        """Record d if it is a run; True if it is one (its sub-folders are its own, not runs)."""
        key = d.resolve()
        if key in seen:
            return True
        if (d / "results.json").is_file():
            seen.add(key)
            evals.append(d)
            return True
        if (d / "run.json").is_file() and (d / "log.jsonl").is_file():
            seen.add(key)
            trains.append(d)
            return True
        if (d / "answers.jsonl").is_file() and (d / "run.json").is_file():
            seen.add(key)
            warn(f"{d}: an evaluation without results.json (still running, or stopped): skipped")
            return True
        return False

    for p in map(Path, paths):
        if not p.exists():
            raise VtcError(f"{p} does not exist")
        if p.is_file():
            if p.name not in ("results.json", "run.json", "log.jsonl"):
                raise VtcError(f"{p} is not a run: give a run directory, a folder of runs, or a results.json")
            p = p.parent
        if visit(p):
            continue
        for root, dirs, _ in os.walk(p):
            # a store holds a folder per video: thousands of folders that are never runs
            dirs[:] = sorted(
                n
                for n in dirs
                if not n.endswith(".zarr")
                and not n.startswith(".")
                and n != "__pycache__"
                and (skip is None or (Path(root) / n).resolve() != skip)
            )
            kept = []
            for n in dirs:
                if not visit(Path(root) / n):
                    kept.append(n)
            dirs[:] = kept
    return evals, trains


# --------------------------------------------------------------------------------------------- reading


def _num(d, *keys) -> float | None:
    """d[k1][k2]... as a finite float, or None where any level is missing or of another type."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    if isinstance(d, bool) or not isinstance(d, (int, float)):
        return None
    return float(d) if math.isfinite(d) else None


def _load_results(path: Path) -> dict | str:
    """results.json as a dict, or why it is not one of vtc's evaluation results."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return f"unreadable ({e.strerror or type(e).__name__})"
    if not raw.strip():
        return "empty (half-written?)"
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except json.JSONDecodeError:
        return "not JSON (torn or foreign)"
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("task"), str):
        return "not a vtc evaluation result (no 'task')"
    if _num(data, "accuracy") is None:
        return "not a vtc evaluation result (no numeric 'accuracy')"
    if _num(data, "visual_tokens", "mean") is None:
        return "not a vtc evaluation result (no 'visual_tokens')"
    if not isinstance(data.get("method"), dict) or not isinstance(data["method"].get("method"), str):
        return "not a vtc evaluation result (no 'method')"
    return data


def method_label(config: dict, kind: str = "offline") -> str:
    """'pool stride=4': the method and the parameters that differ from its defaults."""
    from vtc.reducers.registry import method_label as label

    if kind != "online":
        return label(config)
    from vtc.eval.online import list_online

    return label(config, (list_online().get(str(config.get("method"))) or {}).get("params"))


def _row(d: Path, r: dict) -> Row:
    adapter = r.get("adapter") if isinstance(r.get("adapter"), dict) else None
    run = Path(str(adapter["run"])).name if adapter and adapter.get("run") else None
    adapters = [str(a) for a in (adapter or {}).get("adapters") or []] if adapter else []
    base = adapter.get("init") if adapter and isinstance(adapter.get("init"), dict) else None
    if base:  # trained on top of another run (`vtc train --init`): its adapters are in use too
        adapters += [str(a) for a in base.get("adapters") or [] if str(a) not in adapters]
    online = r.get("online") if isinstance(r.get("online"), dict) else None
    label = method_label(r["method"])
    if online:
        label += " + online " + method_label(online, "online")
    if run:
        label += f" + {run}" + (f" (on {Path(str(base['run'])).name})" if base and base.get("run") else "")
    m = r.get("measured") if isinstance(r.get("measured"), dict) else {}
    ttft = _num(m, "ttft_s", "median")
    mem = _num(m, "peak_memory", "bytes")
    values: dict[str, float | None] = {
        "accuracy": _num(r, "accuracy"),
        "n_samples": _num(r, "n_samples"),
        "tokens_mean": _num(r, "visual_tokens", "mean"),
        "tokens_min": _num(r, "visual_tokens", "min"),
        "tokens_max": _num(r, "visual_tokens", "max"),
        "tokens_decode_mean": _num(r, "visual_tokens_decode", "mean"),
        "tokdense": _num(r, "tokdense"),
        "flops": _num(r, "flops", "mean_per_sample", "total"),
        "ttft_ms": 1000 * ttft if ttft is not None else None,
        "decode_ms": _num(m, "decode_ms_per_token", "median"),
        "peak_memory_mib": mem / 2**20 if mem is not None else None,
        "samples_per_s": _num(m, "samples_per_s"),
    }
    for group, prefix in (("per_category", "category:"), ("per_duration", "duration:")):
        for k, v in (r.get(group) if isinstance(r.get(group), dict) else {}).items():
            # a category may be a bare percentage or {"accuracy": ...}
            values[prefix + str(k)] = _num(v, "accuracy") if isinstance(v, dict) else _num({"v": v}, "v")
    kind = (m.get("peak_memory") or {}).get("kind") if isinstance(m.get("peak_memory"), dict) else None
    return Row(
        task=r["task"],
        label=label,
        method=r["method"],
        adapter=run,
        adapters=adapters,
        online=online,
        dir=str(d),
        values=values,
        memory_kind=str(kind) if kind else None,
    )


def _training_run(d: Path) -> TrainingRun | str:
    meta = read_json(d / "run.json")
    if meta is None or "options" not in meta:
        return "run.json is unreadable or not a vtc training run"
    recs = read_jsonl(d / "log.jsonl", lambda r: None if isinstance(r.get("step"), int) else "no 'step'")
    steps, losses = [], []
    for r in recs:
        loss = _num(r, "loss")
        if loss is not None:
            steps.append(r["step"])
            losses.append(loss)
    evals = [_num(r, "eval", "accuracy") for r in recs if "eval" in r]
    adapters = [str(a) for a in meta.get("adapters") or []]
    label = d.name + (f" ({', '.join(adapters)})" if adapters else "")
    method = meta.get("method")
    if isinstance(method, dict) and isinstance(method.get("sets"), dict):  # reduced on the fly: value lists
        sets = " ".join(f"{k}={','.join(map(str, v))}" for k, v in method["sets"].items())
        label += f" on {method.get('method')}" + (f" {sets}" if sets else "")
    elif isinstance(method, dict) and method.get("method") not in (None, "none"):
        label += f" on {method_label(method)}"
    init = meta.get("init") if isinstance(meta.get("init"), dict) else None
    if init and init.get("run"):
        label += f", on top of {Path(str(init['run'])).name}"
    return TrainingRun(
        dir=str(d),
        label=label,
        adapters=adapters,
        steps=steps,
        losses=losses,
        last_eval=next((e for e in reversed(evals) if e is not None), None),
    )


def _columns(rows: list[Row]) -> list[Column]:
    """The base columns that hold a value, categories and durations after accuracy. Decode tokens only
    where online pruning made them differ from prefill's."""
    have = {k for r in rows for k, v in r.values.items() if v is not None}
    extra = sorted(k for k in have if ":" in k)
    cols = []
    for c in _BASE:
        if c.key == "tokens_decode_mean" and all(
            r.values.get("tokens_decode_mean") in (None, r.values.get("tokens_mean")) for r in rows
        ):
            continue
        if c.key in have:
            cols.append(c)
        if c.key == "accuracy":
            cols += [Column(k, k.split(":", 1)[1], _PCT) for k in extra]
    return cols


def _order(rows: list[Row]) -> list[Row]:
    """Per task, most visual tokens first, then the more accurate; duplicate labels get their dir."""
    rows = sorted(
        rows,
        key=lambda r: (r.task, -(r.values["tokens_mean"] or 0), -(r.values["accuracy"] or 0), r.label),
    )
    seen: dict[tuple[str, str], int] = {}
    for r in rows:
        seen[(r.task, r.label)] = seen.get((r.task, r.label), 0) + 1
    for r in rows:
        if seen[(r.task, r.label)] > 1:
            r.label += f" [{Path(r.dir).name}]"
    return rows


# -------------------------------------------------------------------------------------------- the stage


def report(runs: Sequence[str | Path], out: str | Path) -> Report:
    """Find the evaluations and training runs at or under ``runs``, and write the tables, plots and
    report.html into ``out``."""
    out = Path(out)
    eval_dirs, train_dirs = find_runs(runs, skip=out.resolve())
    skipped: list[str] = []
    rows: list[Row] = []
    for d in eval_dirs:
        r = _load_results(d / "results.json")
        if isinstance(r, str):
            skipped.append(f"{d / 'results.json'}: {r}")
            warn(f"{d / 'results.json'}: {r}: skipped")
            continue
        rows.append(_row(d, r))
    training: list[TrainingRun] = []
    for d in train_dirs:
        t = _training_run(d)
        if isinstance(t, str):
            skipped.append(f"{d}: {t}")
            warn(f"{d}: {t}: skipped")
            continue
        training.append(t)
    if not rows and not training:
        where = ", ".join(map(str, runs))
        more = f" ({len(skipped)} skipped, see the warnings)" if skipped else ""
        raise VtcError(
            f"no evaluation (results.json) or training run (run.json + log.jsonl) found in {where}{more}"
        )
    rows = _order(rows)
    columns = {t: _columns([r for r in rows if r.task == t]) for t in dict.fromkeys(r.task for r in rows)}
    rep = Report(rows=rows, training=training, columns=columns, paths=[], skipped=skipped)

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    plots: list[tuple[str, str, Path]] = []  # (title, caption, png)
    for key, xlabel, name in (
        ("tokens_mean", "visual tokens per sample (mean)", "pareto_tokens"),
        ("flops", "FLOPs per sample (mean)", "pareto_flops"),
        ("ttft_ms", "time to first token, ms (median)", "pareto_ttft"),
    ):
        made = _pareto_plot(rep, key, xlabel, out / name)
        if made:
            written += made
            plots.append((f"accuracy vs {xlabel.split(',')[0].split(' (')[0]}", _PARETO_CAPTION, made[0]))
    if any(t.losses for t in training):
        made = _loss_plot(training, out / "loss")
        written += made
        plots.append(("training loss", "loss per optimizer step: raw (faint) and a moving average", made[0]))
    written.append(_write_csv(rep, out / "report.csv"))
    if training:
        written.append(_write_training_csv(training, out / "training.csv"))
    written.append(_write_markdown(rep, plots, out / "report.md"))
    written.append(_write_html(rep, plots, out / "report.html"))
    # a file of an earlier report that this one did not write would contradict it
    for stale in _ALL_OUTPUTS - {p.name for p in written}:
        (out / stale).unlink(missing_ok=True)
    rep.paths = [str(p) for p in written]
    return rep


_PARETO_CAPTION = "one colour per method, one marker per adapter run; the step line is the Pareto front"
_ALL_OUTPUTS = {
    f"{n}.{e}" for n in ("pareto_tokens", "pareto_flops", "pareto_ttft", "loss") for e in ("png", "svg")
} | {"report.csv", "training.csv", "report.md", "report.html"}


# --------------------------------------------------------------------------------------------- tables


def _cell(col: Column, v: float | None) -> str:
    return "" if v is None else col.fmt(v)


def _memory_note(rows: list[Row]) -> str:
    kinds = sorted({r.memory_kind for r in rows if r.memory_kind})
    return "; ".join(_MEMORY_KINDS.get(k, k) for k in kinds) or "as measured"


def rich_tables(rep: Report, width: int | None = None) -> list:
    """The tables for the terminal: one per task, then the training runs. A task's table wider than
    ``width`` is cut into several, each with the method column, rather than squeezed into ellipses."""
    from rich import box
    from rich.table import Table

    tables = []
    for task in rep.tasks():
        rows, cols = rep.rows_of(task), rep.columns[task]
        cells = {c.key: [_cell(c, r.values.get(c.key)) for r in rows] for c in cols}

        # a column's width on screen: its widest cell or header, one space of padding each side and one
        # between columns
        wide = {c.key: max([len(x) for x in cells[c.key]] + [len(c.header)]) + 3 for c in cols}

        label_width = min(36, max(len(r.label) for r in rows)) + 3
        parts: list[list[Column]] = [[]]
        used = label_width
        for c in cols:
            if width is not None and parts[-1] and used + wide[c.key] > width:
                parts.append([])
                used = label_width
            parts[-1].append(c)
            used += wide[c.key]
        for i, part in enumerate(parts):
            of = f" ({i + 1}/{len(parts)})" if len(parts) > 1 else ""
            t = Table(title=f"{task}: {len(rows)} evaluation(s){of}", box=box.SIMPLE_HEAD)
            t.add_column("method", overflow="fold", max_width=36)
            for c in part:
                t.add_column(c.header, justify="right", no_wrap=True)
            for j, r in enumerate(rows):
                t.add_row(r.label, *(cells[c.key][j] for c in part))
            tables.append(t)
    if rep.training:
        t = Table(title="training runs", box=box.SIMPLE_HEAD)
        for h in ("run", "steps", "last loss", "min loss", "held-out acc"):
            t.add_column(h, justify="left" if h == "run" else "right")
        for s in (tr.summary() for tr in rep.training):
            t.add_row(*_training_cells(s))
        tables.append(t)
    return tables


def _training_cells(s: dict) -> list[str]:
    f = _sig3
    return [
        s["label"],
        str(s["steps"]),
        f(s["last_loss"]) if s["last_loss"] is not None else "",
        f(s["min_loss"]) if s["min_loss"] is not None else "",
        _PCT(s["last_eval_accuracy"]) if s["last_eval_accuracy"] is not None else "",
    ]


def _write_csv(rep: Report, path: Path) -> Path:
    """Every row of every task, full precision (repr), blank where results.json has no value."""
    keys: list[str] = []
    for cols in rep.columns.values():
        keys += [c.key for c in cols if c.key not in keys]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["task", "label", "method", "adapter", "adapters", "online", "dir", *keys])
        for r in rep.rows:
            w.writerow(
                [
                    r.task,
                    r.label,
                    json.dumps(r.method, sort_keys=True),
                    r.adapter or "",
                    ",".join(r.adapters),
                    json.dumps(r.online, sort_keys=True) if r.online else "",
                    r.dir,
                    *("" if r.values.get(k) is None else repr(r.values[k]) for k in keys),
                ]
            )
    return path


def _write_training_csv(training: list[TrainingRun], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["dir", "label", "adapters", "steps", "last_loss", "min_loss", "last_eval_accuracy"])
        for s in (t.summary() for t in training):
            w.writerow(
                [
                    s["dir"],
                    s["label"],
                    ",".join(s["adapters"]),
                    s["steps"],
                    *(
                        "" if s[k] is None else repr(s[k])
                        for k in ("last_loss", "min_loss", "last_eval_accuracy")
                    ),
                ]
            )
    return path


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _write_markdown(rep: Report, plots: list[tuple[str, str, Path]], path: Path) -> Path:
    lines = ["# vtc report", ""]
    for task in rep.tasks():
        rows, cols = rep.rows_of(task), rep.columns[task]
        lines += [f"## {task}", ""]
        lines.append("| " + " | ".join(["method", "adapters", *(c.header for c in cols)]) + " |")
        lines.append("|" + "---|" * 2 + "---:|" * len(cols))
        for r in rows:
            cells = [
                _md_escape(r.label),
                ",".join(r.adapters),
                *(_cell(c, r.values.get(c.key)) for c in cols),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", _NOTES + _memory_note(rows) + ".", ""]
    if rep.training:
        lines += [
            "## training runs",
            "",
            "| run | steps | last loss | min loss | held-out acc |",
            "|---|---:|---:|---:|---:|",
        ]
        for t in rep.training:
            lines.append("| " + " | ".join(map(_md_escape, _training_cells(t.summary()))) + " |")
        lines.append("")
    for title, caption, png in plots:
        lines += [f"![{title}]({png.name})", "", f"*{title}: {caption}*", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{padding:3px 8px;border-bottom:1px solid #ddd}
th{background:#f4f4f4;text-align:left}td{white-space:nowrap}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#555;font-size:12px}
.wrap{overflow-x:auto}
"""


def _write_html(rep: Report, plots: list[tuple[str, str, Path]], path: Path) -> Path:
    """One self-contained file: no script, no network; the plots are PNG data URIs. Each number cell
    carries its full-precision value in data-value, for scripts and for the test that reads it back."""
    import base64

    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # an empty icon: otherwise a browser asks the file system for favicon.ico and logs the miss
        '<link rel="icon" href="data:,">',
        f"<title>vtc report</title><style>{_CSS}</style></head><body>",
        "<h1>vtc report</h1>",
        f'<p class="note">{len(rep.rows)} evaluation(s), {len(rep.training)} training run(s)'
        + (f"; {len(rep.skipped)} skipped" if rep.skipped else "")
        + "</p>",
    ]
    for task in rep.tasks():
        rows, cols = rep.rows_of(task), rep.columns[task]
        parts.append(f"<h2>{e(task)}</h2>")
        parts.append(f'<div class="wrap"><table class="runs" data-task="{e(task)}"><thead><tr>')
        parts += [f"<th>{e(h)}</th>" for h in ("method", "adapters", *(c.header for c in cols))]
        parts.append("</tr></thead><tbody>")
        for r in rows:
            parts.append(f'<tr data-dir="{e(r.dir)}"><td title="{e(r.dir)}">{e(r.label)}</td>')
            parts.append(f"<td>{e(', '.join(r.adapters))}</td>")
            for c in cols:
                v = r.values.get(c.key)
                value = "" if v is None else repr(v)
                parts.append(
                    f'<td class="n" data-key="{e(c.key)}" data-value="{value}">{e(_cell(c, v))}</td>'
                )
            parts.append("</tr>")
        parts.append("</tbody></table></div>")
        parts.append(f'<p class="note">{e(_NOTES + _memory_note(rows))}.</p>')
    if rep.training:
        parts.append('<h2>training runs</h2><table class="training"><thead><tr>')
        parts += [f"<th>{h}</th>" for h in ("run", "steps", "last loss", "min loss", "held-out acc")]
        parts.append("</tr></thead><tbody>")
        for t in rep.training:
            cells = _training_cells(t.summary())
            parts.append(
                f'<tr data-dir="{e(t.dir)}"><td>{e(cells[0])}</td>'
                + "".join(f'<td class="n">{e(c)}</td>' for c in cells[1:])
                + "</tr>"
            )
        parts.append("</tbody></table>")
    if plots:
        parts.append("<h2>plots</h2>")
    for title, caption, png in plots:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(
            f'<figure><img alt="{e(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(title)}: {e(caption)}</figcaption></figure>"
        )
    if rep.skipped:
        parts.append("<h2>skipped</h2><ul>" + "".join(f"<li>{e(s)}</li>" for s in rep.skipped) + "</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- plots

_WIDTH, _HEIGHT, _DPI = 8.0, 5.0, 120  # inches per panel: 960 x 600 pixels
_MARKERS = "osD^vP*Xph"


def _figure(n_panels: int, legend: bool):
    """An Agg figure of fixed pixel size (no tight bbox: the size is part of what the tests check)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(2, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(_WIDTH * ncols, _HEIGHT * nrows), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    right = 1 - (2.1 / (_WIDTH * ncols) if legend else 0.03)
    fig.subplots_adjust(
        left=0.08 / ncols,
        right=right,
        bottom=0.1 / nrows + 0.02,
        top=1 - 0.08 / nrows,
        hspace=0.3,
        wspace=0.18,
    )
    return fig, list(axes[:n_panels])


def _save(fig, base: Path) -> list[Path]:
    png, svg = base.with_suffix(".png"), base.with_suffix(".svg")
    fig.savefig(png, dpi=_DPI, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None})
    return [png, svg]


def _log_wanted(values: list[float]) -> bool:
    pos = [v for v in values if v > 0]
    return len(pos) == len(values) and bool(pos) and max(pos) / min(pos) > 10


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats: none has less or equal x and more y (fewer tokens, same
    accuracy or better), in increasing x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _pareto_plot(rep: Report, key: str, xlabel: str, base: Path) -> list[Path]:
    """Accuracy against ``key``, a panel per task; [] (no file) where no row has the quantity."""
    if not any(r.values.get(key) is not None for r in rep.rows):
        return []
    methods = sorted({str(r.method.get("method")) for r in rep.rows})
    runs = sorted({r.adapter or "" for r in rep.rows})
    colour = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    marker = {a: _MARKERS[i % len(_MARKERS)] for i, a in enumerate(runs)}
    fig, axes = _figure(len(rep.tasks()), legend=True)
    from matplotlib import ticker, transforms
    from matplotlib.lines import Line2D

    for ax, task in zip(axes, rep.tasks(), strict=True):
        rows = [r for r in rep.rows_of(task) if r.values.get(key) is not None]
        ax.set_title(task)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
        if not rows:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        xs = [r.values[key] for r in rows]
        ys = [r.values["accuracy"] for r in rows]
        if _log_wanted(xs):
            ax.set_xscale("log")
        if key == "flops":  # 30M, 1.2T rather than an offset like "1e7" in the corner
            ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        # runs at the same place (pool and uniform keep the same count) side by side, not hidden
        dodge = _dodge(list(zip(xs, ys, strict=True)))
        for r, x, y, dx in zip(rows, xs, ys, dodge, strict=True):
            shifted = transforms.offset_copy(ax.transData, fig=fig, x=dx, y=0, units="points")
            ax.scatter([x], [y], color=colour[str(r.method.get("method"))], marker=marker[r.adapter or ""],
                       s=46, zorder=3, edgecolor="black", linewidth=0.5, transform=shifted)  # fmt: skip
        front = pareto_front(list(zip(xs, ys, strict=True)))
        fx = [p[0] for p in front] + [max(xs)]
        fy = [p[1] for p in front] + [front[-1][1]]
        ax.step(fx, fy, where="post", color="black", lw=1.2, alpha=0.6, zorder=2)
        # scatter through an offset transform leaves the data limits alone: set them from the data
        ax.update_datalim(list(zip(xs, ys, strict=True)))
        ax.margins(x=0.12, y=0.15)
        ax.autoscale_view()
        on_front = set(front)
        labelled = [
            (r, x, y) for r, x, y in zip(rows, xs, ys, strict=True) if len(rows) <= 12 or (x, y) in on_front
        ]
        _place_labels(fig, ax, labelled, list(zip(xs, ys, dodge, strict=True)))
    handles = [
        Line2D([], [], ls="", marker="o", color=colour[m], markeredgecolor="black", label=m) for m in methods
    ]
    if len(runs) > 1 or runs[0]:
        handles += [
            Line2D(
                [],
                [],
                ls="",
                marker=marker[a],
                color="lightgrey",
                markeredgecolor="black",
                label=f"adapter {a}" if a else "no adapter",
            )  # fmt: skip
            for a in runs
        ]
    handles.append(Line2D([], [], color="black", alpha=0.6, label="Pareto front"))
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    return _save(fig, base)


def _dodge(points: list[tuple[float, float]], step: float = 8.0) -> list[float]:
    """A horizontal offset in points per point: 0 for a lone one, side by side for ones that coincide."""
    groups: dict[tuple[float, float], list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault(p, []).append(i)
    dx = [0.0] * len(points)
    for members in groups.values():
        for j, i in enumerate(members):
            dx[i] = (j - (len(members) - 1) / 2) * step
    return dx


def _place_labels(fig, ax, labelled, all_points) -> None:
    """Put each point's label where it covers the fewest other labels and markers, stays inside the axes
    and lies nearer its own point than any other (else it reads as the other's): greedy over eight
    positions at growing distances. Points at the same place share one label."""
    fig.canvas.draw()  # fixes the limits and gives a renderer to measure text with
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    groups: dict[tuple[float, float], list[str]] = {}
    for r, x, y in labelled:
        groups.setdefault((x, y), []).append(r.label)
    marks = []  # (the point it marks, its centre on the canvas)
    for x, y, dx in all_points:
        px, py = ax.transData.transform((x, y))
        marks.append(((x, y), (px + dx * fig.dpi / 72, py)))
    placed: list[tuple[float, float, float, float]] = []
    directions = [(1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0)]

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    def distance(box, p) -> float:
        return math.hypot(max(box[0] - p[0], 0, p[0] - box[2]), max(box[1] - p[1], 0, p[1] - box[3]))

    for (x, y), labels in sorted(groups.items(), key=lambda g: -g[0][1]):
        text = "\n".join(labels)
        own = [c for p, c in marks if p == (x, y)]
        others = [c for p, c in marks if p != (x, y)]
        best = None
        for dist in (7, 16, 30, 48):
            for dx, dy in directions:
                ann = ax.annotate(
                    text, (x, y), xytext=(dx * dist, dy * dist), textcoords="offset points", fontsize=7.5,
                    ha={1: "left", -1: "right", 0: "center"}[dx], va={1: "bottom", -1: "top", 0: "center"}[dy],
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.6} if dist > 7 else None,
                )  # fmt: skip
                bb = ann.get_window_extent(renderer)
                box = (bb.x0, bb.y0, bb.x1, bb.y1)
                inside = overlap(box, (frame.x0, frame.y0, frame.x1, frame.y1))
                # in square pixels covered, text over text or a marker or past the frame weighing most
                cost = 10 * sum(overlap(box, o) for o in placed)
                cost += 10 * sum(overlap(box, (cx - 5, cy - 5, cx + 5, cy + 5)) for _, (cx, cy) in marks)
                cost += 10 * (bb.width * bb.height - inside)
                near = min(distance(box, c) for c in own)
                cost += 800 * sum(distance(box, c) < near for c in others)
                cost += dist  # nearer is better, all else equal
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, ann, box)
                else:
                    ann.remove()
            if best[0] <= 30:  # nothing covered at this distance: go no further out
                break
        placed.append(best[2])


def _loss_plot(training: list[TrainingRun], base: Path) -> list[Path]:
    import numpy as np

    fig, (ax,) = _figure(1, legend=False)
    ax.set_title("training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (cross-entropy, answer tokens)")
    ax.grid(True, alpha=0.3)
    everything = []
    for i, t in enumerate(x for x in training if x.losses):
        steps, loss = np.asarray(t.steps), np.asarray(t.losses)
        everything += t.losses
        ax.plot(steps, loss, color=f"C{i % 10}", lw=0.6, alpha=0.25)
        # a centred moving mean (a trailing one lags the fast fall of the first steps); at the ends the
        # window shrinks to what is there
        kernel = np.ones(max(1, len(loss) // 40))
        smooth = np.convolve(loss, kernel, mode="same") / np.convolve(np.ones_like(loss), kernel, mode="same")
        ax.plot(steps, smooth, color=f"C{i % 10}", lw=1.6, label=t.label)
    if _log_wanted(everything):
        ax.set_yscale("log")
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, base)


def to_json(rep: Report) -> str:
    return json.dumps(rep.to_dict(), indent=2, default=str)


def results_table(results: list[dict], title: str = "vtc eval"):
    """One row per run, within 80 columns: accuracy (Video-MME: short/medium/long below it), visual
    tokens at prefill (→ at decode when online pruning changed them), TokDense, LLM GFLOPs per sample
    (analytic), median time to first token and decode ms/token."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD)
    t.add_column("method", min_width=12, max_width=20, overflow="fold")
    for col in ("n", "acc%", "tokens", "TokDense", "GFLOPs", "TTFT ms", "ms/tok"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in results:
        # the parameters that differ from the defaults, one per line (the full config is in results.json)
        name = method_label(r["method"]).replace(" ", "\n ")
        if r.get("online"):
            name += "\n+" + method_label(r["online"], "online").replace(" ", "\n ")
        vt = r["visual_tokens"]
        vd = r.get("visual_tokens_decode") or {}
        pd = r.get("per_duration", {})
        acc = f"{r['accuracy']:.1f}"
        if pd:
            acc += "\n" + "/".join(f"{pd[k]:.0f}" if k in pd else "-" for k in ("short", "medium", "long"))
        tokens = f"{vt['mean']:.0f}"
        if vd and round(vd["mean"]) != round(vt["mean"]):
            tokens += f"\n→{vd['mean']:.0f}"
        fl = (r.get("flops") or {}).get("mean_per_sample", {})
        ms = r.get("measured") or {}
        ttft = (ms.get("ttft_s") or {}).get("median")
        dec = (ms.get("decode_ms_per_token") or {}).get("median")
        t.add_row(
            name,
            str(r["n_samples"]),
            acc,
            tokens,
            f"{r['tokdense']:.4f}",
            f"{fl['total'] / 1e9:.4g}" if "total" in fl else "-",
            f"{1000 * ttft:.0f}" if ttft is not None else "-",
            f"{dec:.1f}" if dec is not None else "-",
        )
    return t
