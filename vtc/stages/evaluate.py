"""Stage 4: answer a benchmark's questions with LLaVA-OneVision on stored tokens, through lmms-eval.

Writes ``results.json``: accuracy as lmms-eval computes it (Video-MME also per duration), the visual
tokens that reached the LLM per sample (mean/min/max), TokDense = accuracy / mean visual tokens, and
wall time, plus the model, the stores and the method config it was measured with.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from vtc.errors import VtcError
from vtc.versions import library_versions

# Tasks whose per-sample result carries a duration (short/medium/long) to break accuracy down by.
_DURATION_METRIC = {"videomme": "videomme_perception_score"}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def evaluate(
    task: str,
    tokens: str | Path,
    model: str,
    data: str | Path | None = None,
    include: str | Path | None = None,
    limit: int | None = None,
    out: str | Path = "vtc-eval",
    device: str = "cpu",
    dtype: str = "fp32",
    seed: int = 0,
    quiet: bool = False,
) -> dict:
    """Run ``task`` (an lmms-eval task name, or a local copy given by ``data``) and return the results dict."""
    import logging

    from vtc.eval.tasks import write_local_task

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    include_paths = [str(include)] if include else []
    task_name = task
    if data is not None:
        task_name = write_local_task(task, data, out / "task")
        include_paths.append(str(out / "task"))

    t0 = time.perf_counter()
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from vtc.eval.lmms_model import VtcLlavaOneVision

    for name in ("lmms-eval", "datasets", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # lmms-eval logs through loguru to stdout; keep stdout for vtc's own output (tables, --json).

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    tm = TaskManager(verbosity="ERROR", include_path=include_paths or None)
    if task_name not in tm.all_tasks:
        raise VtcError(
            f"unknown task '{task_name}' (not in lmms-eval's registry or {include_paths or 'any --include dir'})"
        )
    lm = VtcLlavaOneVision(pretrained=model, tokens=str(tokens), device=device, dtype=dtype)
    try:
        res = simple_evaluate(
            model=lm,
            tasks=[task_name],
            task_manager=tm,
            limit=limit,
            log_samples=True,
            bootstrap_iters=0,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            verbosity="ERROR",
            process_docs_parallel=1,
        )
    except VtcError:
        raise
    except Exception as e:  # lmms-eval's own CLI swallows these and exits 0; vtc does not
        raise VtcError(f"lmms-eval failed on task '{task_name}': {_one_line(e)}") from e
    if not res or not res.get("results", {}).get(task_name) or not lm.sample_log:
        raise VtcError(f"lmms-eval returned no results for '{task_name}' (dataset empty or failed to load)")
    wall = time.perf_counter() - t0

    results = summarise(task, task_name, res, lm.sample_log)
    results.update(
        {
            "wall_time_s": round(wall, 3),
            "model": model,
            "tokens_store": str(Path(tokens).resolve()),
            "features_store": str(lm.source.features.path.resolve()),
            "method": lm.source.method,
            "seed": seed,
            "limit": limit,
            "data": str(Path(data).resolve()) if data else None,
            "versions": library_versions(),
        }
    )
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def summarise(task: str, task_name: str, res: dict, sample_log: list[dict]) -> dict:
    metrics = {
        k.split(",")[0]: v
        for k, v in res["results"][task_name].items()
        if "," in k and "stderr" not in k and isinstance(v, (int, float))
    }
    if not metrics:
        raise VtcError(f"lmms-eval gave no numeric metric for '{task_name}'")
    metric = _DURATION_METRIC.get(task, next(iter(metrics)))
    accuracy = float(metrics.get(metric, next(iter(metrics.values()))))

    counts = [s["visual_tokens"] for s in sample_log]
    out = {
        "task": task,
        "lmms_eval_task": task_name,
        "metric": metric,
        "accuracy": accuracy,
        "n_samples": len(sample_log),
        "visual_tokens": {"mean": statistics.fmean(counts), "min": min(counts), "max": max(counts)},
        "tokdense": accuracy / statistics.fmean(counts),
        "metrics": metrics,
    }
    if task in _DURATION_METRIC:
        by: dict[str, list[float]] = {}
        for s in res.get("samples", {}).get(task_name, []):
            d = s.get(_DURATION_METRIC[task])
            if isinstance(d, dict) and "duration" in d:
                by.setdefault(d["duration"], []).append(float(d["score"]))
        out["per_duration"] = {k: 100.0 * sum(v) / len(v) for k, v in sorted(by.items())}
    by_doc = {(s["task"], s["doc_id"]): s for s in sample_log}
    out["samples"] = []
    for s in res.get("samples", {}).get(task_name, []):
        log = by_doc.get((task_name, s.get("doc_id")), {})
        scored = s.get(metric) if isinstance(s.get(metric), dict) else {}
        out["samples"].append(
            {
                "doc_id": s.get("doc_id"),
                "video": log.get("video"),
                "visual_tokens": log.get("visual_tokens"),
                "answer": log.get("answer"),
                "target": s.get("target"),
                "score": scored.get("score"),
            }
        )
    return out
