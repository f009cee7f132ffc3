"""Stage 4: answer a benchmark's questions with a video LLM (LLaVA-OneVision, Qwen2.5-VL) on stored tokens,
through lmms-eval.

Writes ``results.json``, one self-describing record of the run:

- accuracy as lmms-eval computes it (Video-MME also per duration), per-sample rows;
- visual tokens reaching the LLM per sample, at prefill and at decode after online (KV) pruning,
  mean/min/max; TokDense = accuracy / mean visual tokens at prefill;
- analytic FLOPs (LLM prefill and decode from the model config, plus the reduction module's own);
- measured time to first token, decode ms/token, samples/s, peak memory (CUDA allocator peak on a GPU,
  process peak RSS otherwise — which includes the model weights and Python itself);
- model, stores, offline method config and seed, online method config, library versions, git hash.

Every answer is journalled in ``OUT/answers.jsonl`` as it is produced; re-running the same command
resumes from it (``fresh=True`` starts over), and a journal from a different run is refused. With
``processes`` > 1, or under torchrun / ``accelerate launch``, the requests are sharded over processes
that journal in ``OUT/answers.rank{r}-of-{N}.jsonl`` (`vtc.stages.shards`), and one pass over the
journals scores them as one process would.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vtc.cache.jsonl import exclusive, read_json
from vtc.errors import VtcError
from vtc.stages.progress import progress_bar, third_party_quiet
from vtc.versions import library_versions


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def git_hash() -> str | None:
    """The commit of the vtc source tree that ran (None outside a git checkout); '+dirty' if modified."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def model_identity(model: str) -> dict:
    """What makes two runs' answers interchangeable: the id, and for a local dir its weights' size/mtime."""
    p = Path(model)
    ident: dict = {"id": model}
    if p.is_dir():
        ident["files"] = {
            f.name: [f.stat().st_size, int(f.stat().st_mtime)] for f in sorted(p.glob("*.safetensors"))
        }
    return ident


def adapter_identity(adapter) -> dict | None:
    """A trained run as the answers depend on it: its path and its weights' size/mtime."""
    if not adapter:
        return None
    w = Path(adapter) / "adapter.safetensors"
    meta = read_json(Path(adapter) / "adapter.json")
    return {
        "run": str(Path(adapter).resolve()),
        "weights": [w.stat().st_size, int(w.stat().st_mtime)] if w.exists() else None,
        "adapters": (meta or {}).get("adapters"),
        "init": adapter_identity(((meta or {}).get("init") or {}).get("run")),
    }


def _check_resume(out: Path, run_key: dict, fresh: bool) -> None:
    """Refuse to mix answers of different runs in one --out; --fresh discards the old journals (of any N)."""
    from vtc.stages.shards import answer_journals

    run_file, journals = out / "run.json", answer_journals(out)
    if fresh:
        for journal in journals:
            journal.unlink(missing_ok=True)
    elif run_file.exists() and journals:
        old = read_json(run_file)
        if old is None:  # torn by a crash, or not ours: which run the answers belong to is unknown
            raise VtcError(
                f"{run_file} is unreadable, so the answers in {journals[0].name} cannot be matched to this run; "
                "use --fresh to discard them, or another --out"
            )
        diff = next((k for k in sorted(set(old) | set(run_key)) if old.get(k) != run_key.get(k)), None)
        if diff is not None:
            raise VtcError(
                f"{out} holds answers of a different evaluation ('{diff}' differs); "
                "use another --out, or --fresh to discard them"
            )
    run_file.write_text(json.dumps(run_key, indent=2, default=str))


@contextlib.contextmanager
def _removed_unless_answered(out: Path, made: bool) -> Iterator[None]:
    """On an error inside, remove ``out`` if this run created it and no answer journal exists yet (of any
    rank): a run that failed before answering leaves nothing behind, one that answered keeps it."""
    from vtc.stages.shards import answer_journals

    try:
        yield
    except BaseException:
        if made and not answer_journals(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


class _PeakMemory:
    """Peak memory of the evaluation: CUDA allocator peak on a GPU, else the process's peak RSS."""

    def __init__(self, device: str):
        import torch

        self.cuda = device.startswith("cuda") and torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        self.device = device

    def read(self) -> dict:
        if self.cuda:
            import torch

            return {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated(self.device))}
        import resource

        return {
            "kind": "process_peak_rss",
            "bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
        }


@dataclass
class EvalOptions:
    """What `evaluate` is asked to do (the CLI builds it from its options)."""

    task: str
    tokens: str | Path
    model: str
    data: str | Path | None = None
    include: str | Path | None = None
    limit: int | None = None
    out: str | Path = "vtc-eval"
    device: str = "cpu"
    dtype: str = "fp32"
    seed: int = 0
    verbose: bool = False
    online: str | None = None
    online_params: dict | None = None
    batch_size: int = 1
    log_samples: bool = False
    fresh: bool = False
    max_new_tokens: int = 16
    adapter: str | Path | None = None
    processes: int = 1


@dataclass
class _Plan:
    """What every process of one evaluation shares, resolved once (by the parent, or by rank 0)."""

    task_name: str  # lmms-eval's name (a local copy's generated task)
    include_paths: list[str]
    online_cfg: dict | None
    run_key: dict
    # the TaskManager that checked the task, for the next lmms-eval pass of this process (indexing
    # lmms-eval's registry takes ~20 s); another process builds its own
    tm: object = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "tm": None}


def evaluate(opt: EvalOptions, quiet: bool = False, console=None) -> dict | None:
    """Run ``task`` (an lmms-eval task name, or a local copy given by ``data``) and return the results dict.
    vtc's progress bar goes to ``console`` (none when ``quiet``); lmms-eval's and datasets' bars and log
    lines are held back unless ``verbose`` (their warnings are shown once each).

    ``processes`` > 1 answers the requests in that many spawned processes (`vtc.stages.shards`); under
    torchrun or ``accelerate launch`` this process is one rank of the launched run, and only rank 0
    returns the results (the others None)."""
    from vtc.stages.shards import launched

    me = launched()
    if opt.processes < 1:
        raise VtcError(f"--processes must be >= 1, got {opt.processes}")
    if me is not None and opt.processes not in (1, me.world):
        raise VtcError(
            f"launched as rank {me.rank} of {me.world}: leave out --processes (got {opt.processes}); "
            "the launcher's processes are the ranks"
        )
    out = Path(opt.out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if me is not None:
        return _evaluate_launched(opt, me, out, made, quiet, console)
    # One evaluation per --out at a time: two would both append to the journals and both write results.
    # The ranks of this one write their own journals without the lock, which this process holds for them.
    with (
        _removed_unless_answered(out, made),
        exclusive(out / ".lock", f"evaluation output {out}"),
        third_party_quiet(opt.verbose, console),
    ):
        t0 = time.perf_counter()
        plan = _prepare(opt, out)
        bar = functools.partial(
            progress_bar, f"eval {opt.task}", unit="samples", quiet=quiet or console is None, console=console
        )
        if opt.processes == 1:
            return _evaluate_alone(opt, plan, out, bar, t0)
        from vtc.stages.shards import rank_device, run_ranks

        n = opt.processes
        devices = [rank_device(opt.device, r, n) for r in range(n)]
        before = _journalled(out)
        reports = run_ranks(answer_shard, (opt, plan, devices), n, bar)
        return _merge(opt, plan, out, before, reports, t0)


def _quiet_libraries(verbose: bool) -> None:
    import logging

    for name in ("lmms-eval", "datasets", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # lmms-eval logs through loguru to stdout; keep stdout for vtc's own output (tables, --json).
    from loguru import logger

    logger.remove()
    # looked up at each line, so third_party_quiet can hold the lines back
    logger.add(lambda m: sys.stderr.write(m), level="INFO" if verbose else "WARNING")


def _task_manager(opt: EvalOptions, include_paths: list[str]):
    from lmms_eval.tasks import TaskManager

    _quiet_libraries(opt.verbose)
    # A local copy needs only its own YAML: indexing lmms-eval's ~3,000 task files takes ~20 s.
    return TaskManager(
        verbosity="ERROR", include_path=include_paths or None, include_defaults=opt.data is None
    )


def _prepare(opt: EvalOptions, out: Path) -> _Plan:
    """Check the options and the task, write the local task and run.json (refusing another run's answers)."""
    from vtc.eval.online import get_online, online_config
    from vtc.eval.tasks import write_local_task

    include_paths = [str(opt.include)] if opt.include else []
    task_name = opt.task
    if opt.data is not None:
        task_name = write_local_task(opt.task, opt.data, out / "task")
        include_paths.append(str(out / "task"))
    if opt.online_params and not opt.online:
        raise VtcError(
            "--set configures an online method: add --online NAME (vtc eval list-online lists them)"
        )
    online_cfg = online_config(get_online(opt.online, **(opt.online_params or {}))) if opt.online else None
    if opt.online and opt.batch_size > 1:
        raise VtcError("online methods run at --batch-size 1 (each sample has its own KV selection)")

    tm = _task_manager(opt, include_paths)
    if task_name not in tm.all_tasks:
        raise VtcError(
            f"unknown task '{task_name}' (not in lmms-eval's registry or {include_paths or 'any --include dir'})"
        )
    from vtc.eval.runner import TokenSource

    source = TokenSource(opt.tokens)
    run_key = {
        "task": opt.task,
        "data": str(Path(opt.data).resolve()) if opt.data else None,
        "model": model_identity(opt.model),
        "tokens_identity": (source.tokens if source.tokens is not None else source.features).meta.get(
            "identity_hash"
        ),
        "tokens_store": str(Path(opt.tokens).resolve()),
        "method": source.method,
        "online": online_cfg,
        "dtype": opt.dtype,
        "device": opt.device,
        "max_new_tokens": opt.max_new_tokens,
        "adapter": adapter_identity(opt.adapter),
    }
    _check_resume(out, run_key, opt.fresh)
    return _Plan(task_name, include_paths, online_cfg, run_key, tm)


def _model(opt: EvalOptions, out: Path, device: str, journal: str, shard: tuple[int, int] | None = None):
    """The lmms-eval model answering on ``device``, appending to ``OUT/journal`` and resuming from every
    journal in OUT; with ``shard`` (rank, world) only that rank's share of the requests."""
    from vtc.eval.lmms_model import VtcModel
    from vtc.eval.runner import TokenSource
    from vtc.stages.shards import AllAnswers, ShardModel

    kwargs = dict(
        pretrained=opt.model,
        tokens=str(opt.tokens),
        device=device,
        dtype=opt.dtype,
        batch_size=opt.batch_size,
        max_new_tokens=opt.max_new_tokens,
        online=opt.online,
        online_set=dict(opt.online_params or {}),
        source=TokenSource(opt.tokens),
        adapter=str(opt.adapter) if opt.adapter else None,
    )
    lm = VtcModel(**kwargs) if shard is None else ShardModel(shard, **kwargs)
    lm.journal = AllAnswers(out, out / journal)
    return lm


def _run_lmms(opt: EvalOptions, lm, plan: _Plan) -> dict:
    """lmms-eval's simple_evaluate of the task with ``lm``; its failures become one line."""
    from lmms_eval.evaluator import simple_evaluate

    from vtc.stages.shards import ShardDone, single_process_env

    tm, plan.tm = plan.tm or _task_manager(opt, plan.include_paths), None  # one pass per TaskManager
    try:
        with single_process_env():
            res = simple_evaluate(
                model=lm,
                tasks=[plan.task_name],
                task_manager=tm,
                limit=opt.limit,
                log_samples=True,
                bootstrap_iters=0,
                random_seed=opt.seed,
                numpy_random_seed=opt.seed,
                torch_random_seed=opt.seed,
                verbosity="ERROR",
                process_docs_parallel=1,
            )
    except (VtcError, ShardDone):
        raise
    except Exception as e:  # lmms-eval's own CLI swallows these and exits 0; vtc does not
        raise VtcError(f"lmms-eval failed on task '{plan.task_name}': {_one_line(e)}") from e
    if not res or not res.get("results", {}).get(plan.task_name) or not lm.sample_log:
        raise VtcError(
            f"lmms-eval returned no results for '{plan.task_name}' (dataset empty or failed to load)"
        )
    return res


def _evaluate_alone(opt: EvalOptions, plan: _Plan, out: Path, bar, t0: float) -> dict:
    memory = _PeakMemory(opt.device)
    lm = _model(opt, out, opt.device, "answers.jsonl")
    lm.progress = bar
    res = _run_lmms(opt, lm, plan)
    return _finish(opt, plan, out, res, lm, memory.read(), t0, processes=1)


def answer_shard(
    opt: EvalOptions, plan: _Plan, devices: list[str] | dict[int, str], *, rank: int, world: int, progress
) -> dict:
    """Rank ``rank`` of ``world``: answer requests i with i mod world == rank into the rank's journal.
    Returns what the merge needs of the rank (its peak memory, how many answers it made)."""
    from vtc.stages.shards import ShardDone, journal_name, silenced, with_fail_hook

    out = Path(opt.out)
    with silenced(opt.verbose):
        memory = _PeakMemory(devices[rank])
        lm = _model(opt, out, devices[rank], journal_name(rank, world), shard=(rank, world))
        lm.progress = with_fail_hook(progress, rank)
        try:
            _run_lmms(opt, lm, plan)
        except ShardDone:
            pass
        return {
            "rank": rank,
            "device": devices[rank],
            "answered": len(lm.sample_log) - lm.resumed,
            "peak_memory": memory.read(),
        }


def _journalled(out: Path) -> set[str]:
    from vtc.stages.shards import AllAnswers

    return set(AllAnswers(out, out / "answers.jsonl").done)


def _merge(
    opt: EvalOptions, plan: _Plan, out: Path, before: set[str], reports: list[dict], t0: float
) -> dict:
    """Score a sharded run from its journals alone, as one process would have: the same lmms-eval pass
    over the same answers. ``before``: the keys journalled before the ranks started (resumed answers)."""
    from vtc.encoders.vision import load_config
    from vtc.eval.runner import TokenSource
    from vtc.stages.shards import AllAnswers, JournalModel

    lm = JournalModel(TokenSource(opt.tokens), load_config(opt.model), AllAnswers(out, out / "answers.jsonl"))
    res = _run_lmms(opt, lm, plan)
    for rec in lm.sample_log:  # the journal model resumes everything; resumed means: from an earlier run
        rec["resumed"] = rec["key"] in before
    lm.resumed = sum(rec["resumed"] for rec in lm.sample_log)
    peaks = [r["peak_memory"] for r in reports]
    memory = {
        "kind": peaks[0]["kind"],
        "bytes": max(p["bytes"] for p in peaks),  # the most any one process (GPU) needed
        "per_rank": [p["bytes"] for p in peaks],
    }
    return _finish(opt, plan, out, res, lm, memory, t0, processes=len(reports))


def _finish(
    opt: EvalOptions, plan: _Plan, out: Path, res: dict, lm, memory: dict, t0: float, processes: int
) -> dict:
    """results.json (and samples.jsonl with --log-samples) from lmms-eval's scores and the answers' log."""
    wall = time.perf_counter() - t0
    results = summarise(opt.task, plan.task_name, res, lm.sample_log)
    results["measured"] = measured(lm.sample_log, memory, lm.resumed)
    results["flops"] = flops_summary(lm, lm.sample_log)
    results.update(
        {
            "wall_time_s": round(wall, 3),
            "model": opt.model,
            "tokens_store": str(Path(opt.tokens).resolve()),
            "features_store": str(lm.source.features.path.resolve()),
            "method": lm.source.method,
            "method_seed": (
                lm.source.tokens.meta["identity"].get("seed") if lm.source.tokens is not None else None
            ),
            "online": plan.online_cfg,
            "adapter": plan.run_key["adapter"],
            "seed": opt.seed,
            "limit": opt.limit,
            "batch_size": opt.batch_size,
            "device": opt.device,
            "dtype": opt.dtype,
            "processes": processes,
            "data": str(Path(opt.data).resolve()) if opt.data else None,
            "versions": library_versions(),
            "git": git_hash(),
        }
    )
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if opt.log_samples:
        with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
            for s in res.get("samples", {}).get(plan.task_name, []):
                f.write(json.dumps(s, default=str) + "\n")
    return results


def _evaluate_launched(opt: EvalOptions, me, out: Path, made: bool, quiet: bool, console) -> dict | None:
    """One rank of a run torchrun or ``accelerate launch`` started: rank 0 takes the lock and checks the
    run for everyone, every rank answers its share, rank 0 merges once all have finished."""
    import datetime

    import torch.distributed as dist

    from vtc.stages.shards import rank_device, share_cores, silenced

    if dist.is_initialized():  # lmms-eval would run its own barriers in that group; vtc's ranks need theirs
        raise VtcError(
            "torch.distributed is already initialized in this process: launch `-m vtc eval` itself "
            "(torchrun or accelerate launch)"
        )
    # gloo: objects only, on any device. The final gather waits for the slowest rank's whole share,
    # which can take hours; a rank that dies is the launcher's to notice (it stops the others).
    dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: dist.is_initialized() and dist.destroy_process_group())
        box: list = [None, None, None]  # rank 0's error, the plan, the keys journalled before
        t0 = time.perf_counter()
        if me.rank == 0:
            try:
                stack.enter_context(_removed_unless_answered(out, made))
                stack.enter_context(exclusive(out / ".lock", f"evaluation output {out}"))
                stack.enter_context(third_party_quiet(opt.verbose, console))
                box = [None, _prepare(opt, out), _journalled(out)]
            except BaseException as e:  # the other ranks wait for the plan: tell them, then fail here
                dist.broadcast_object_list(
                    [e.args[0] if isinstance(e, VtcError) else _one_line(e), None, None]
                )
                raise
        else:
            stack.enter_context(silenced(opt.verbose))
        dist.broadcast_object_list(box, src=0)
        error, plan, before = box
        if error is not None:
            raise VtcError(f"rank 0 of {me.world} stopped the run: {error}")
        # one bar, rank 0's own share: launched ranks share no queue with a parent
        bar = functools.partial(
            progress_bar,
            f"eval {opt.task} (rank 0 of {me.world})",
            unit="samples",
            quiet=quiet or console is None or me.rank != 0,
            console=console,
        )
        report, failure = None, None
        try:
            device = rank_device(opt.device, me.local_rank, me.local_world)
            if "OMP_NUM_THREADS" not in os.environ:  # torchrun sets it; accelerate may not
                share_cores(me.local_world)
            report = answer_shard(opt, plan, {me.rank: device}, rank=me.rank, world=me.world, progress=bar)
        except Exception as e:  # every rank must reach the gather, or the others wait for it
            failure = e.args[0] if isinstance(e, VtcError) else _one_line(e)
        reports: list = [None] * me.world
        dist.all_gather_object(reports, (report, failure))
        # lmms-eval runs a barrier whenever a process group exists; the merge is rank 0's alone
        dist.destroy_process_group()
        bad = next((r for r, (_, f) in enumerate(reports) if f is not None), None)
        if bad is not None:
            raise VtcError(
                f"rank {bad} of {me.world} failed: {reports[bad][1]} (answers so far are journalled; "
                "re-run the same command to resume)"
            )
        if me.rank != 0:
            return None
        return _merge(opt, plan, out, before, [r for r, _ in reports], t0)


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def measured(sample_log: list[dict], memory: dict, resumed: int) -> dict:
    """Timings over the samples generated in this run (journalled answers keep their original timings)."""
    ttft = [s["ttft_s"] for s in sample_log if s.get("ttft_s") is not None]
    dec = [s["decode_s_per_token"] for s in sample_log if s.get("decode_s_per_token") is not None]
    busy = sum(s.get("seconds", 0.0) for s in sample_log)
    return {
        "ttft_s": _stats(ttft),
        "decode_ms_per_token": _stats([1000 * d for d in dec]),
        "samples_per_s": len(sample_log) / busy if busy > 0 else None,
        "peak_memory": memory,
        "resumed_samples": resumed,
    }


def flops_summary(lm, sample_log: list[dict]) -> dict:
    """Mean analytic FLOPs per sample: LLM prefill/decode (per-layer visible visual tokens) + module."""
    from vtc.eval.flops import LLMShape, llm_flops

    shape = LLMShape.from_config(lm.runner.model.config)
    entries = lm.source.tokens.entries() if lm.source.tokens is not None else {}
    module = {vid: e.get("module_flops", 0.0) for vid, e in entries.items()}
    rows = []
    for s in sample_log:
        f = llm_flops(
            shape,
            n_text=s["n_text"],
            n_visual=s["visual_tokens"],
            n_new=max(1, s["n_new_tokens"]),
            visible_prefill=s.get("visible_per_layer_prefill"),
            visible_decode=s.get("visible_per_layer_decode"),
        )
        rows.append({**f, "module": float(module.get(s["video"], 0.0))})
    keys = sorted({k for r in rows for k in r if isinstance(r[k], (int, float))})
    return {"mean_per_sample": {k: statistics.fmean(r[k] for r in rows) for k in keys}, "unit": "FLOPs"}


def summarise(task: str, task_name: str, res: dict, sample_log: list[dict]) -> dict:
    """accuracy (a percentage for every task: lmms-eval reports some as fractions), tokens, breakdowns."""
    from vtc.eval.tasks import LOCAL_TASKS, category_breakdown

    metrics = {
        k.split(",")[0]: v
        for k, v in res["results"][task_name].items()
        if "," in k and "stderr" not in k and isinstance(v, (int, float))
    }
    if not metrics:
        raise VtcError(f"lmms-eval gave no numeric metric for '{task_name}'")
    spec = LOCAL_TASKS.get(task)  # None: a task of lmms-eval's own registry
    metric = spec.metric if spec and spec.metric in metrics else next(iter(metrics))
    scale = spec.scale if spec and metric == spec.metric else 1
    accuracy = float(metrics[metric]) * scale

    counts = [s["visual_tokens"] for s in sample_log]
    out = {
        "task": task,
        "lmms_eval_task": task_name,
        "metric": metric,
        "accuracy": accuracy,
        "accuracy_scale": scale,
        "n_samples": len(sample_log),
        "visual_tokens": {"mean": statistics.fmean(counts), "min": min(counts), "max": max(counts)},
        "visual_tokens_decode": _stats([s.get("visual_decode", s["visual_tokens"]) for s in sample_log]),
        "tokdense": accuracy / statistics.fmean(counts),
        "metrics": metrics,
    }
    scored_samples = res.get("samples", {}).get(task_name, [])
    if spec and spec.per_duration:
        by: dict[str, list[float]] = {}
        for s in scored_samples:
            d = s.get(spec.metric)
            if isinstance(d, dict) and "duration" in d:
                by.setdefault(d["duration"], []).append(float(d["score"]))
        out["per_duration"] = {k: 100.0 * sum(v) / len(v) for k, v in sorted(by.items())}
    if spec:
        per_cat = category_breakdown(task, scored_samples)
        if per_cat:
            out["per_category"] = per_cat
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
                "visual_tokens_decode": log.get("visual_decode"),
                "ttft_s": log.get("ttft_s"),
                "decode_s_per_token": log.get("decode_s_per_token"),
                "n_new_tokens": log.get("n_new_tokens"),
                "resumed": bool(log.get("resumed", False)),
                "answer": log.get("answer"),
                "target": s.get("target"),
                "score": scored.get("score"),
            }
        )
    return out
