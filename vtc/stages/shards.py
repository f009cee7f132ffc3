"""Sharded evaluation: one evaluation's requests split over N processes, each journalling its own answers.

Request i (in the order one process answers them) goes to rank i mod N. Rank r journals in
``OUT/answers.rank{r}-of-{N}.jsonl``; a single process in ``OUT/answers.jsonl``. Answers are keyed by
request, not by rank, so every process reads every journal of the out dir: a run resumed with another
N reuses all of them. The ranks are either processes that ``vtc eval --processes N`` spawns
(``run_ranks``), or processes an outside launcher started (``accelerate launch``, ``torchrun``:
``launched``). Either way the scores come from one final pass over the journals alone
(``JournalModel``), so they are those of a single process by construction.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import queue
import signal
import sys
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vtc.cache.jsonl import read_jsonl
from vtc.errors import VtcError
from vtc.eval.lmms_model import AnswerJournal, VtcModel

_POLL_S = 0.2  # how often the parent looks at its children while none reports
_DRAIN_S = 1.0  # how long a dead child's last messages may take to arrive
_TERM_GRACE_S = 5.0  # seconds a stopped child gets before it is killed
# Test hook: "RANK:N" makes rank RANK fail after journalling N answers (the crash test needs a real
# child process to fail; a monkeypatch does not cross a spawn).
FAIL_HOOK = "VTC_TEST_FAIL_RANK"


def journal_name(rank: int, world: int) -> str:
    return "answers.jsonl" if world == 1 else f"answers.rank{rank}-of-{world}.jsonl"


def answer_journals(out: Path) -> list[Path]:
    """Every answer journal in ``out``, whatever N wrote it."""
    return sorted(Path(out).glob("answers*.jsonl"))


class AllAnswers(AnswerJournal):
    """The answers of every journal in ``out`` (keyed by request); appends go to ``path`` alone."""

    def __init__(self, out: Path, path: Path):
        super().__init__(path)
        self.out = Path(out)

    def latest(self, reload: bool = False) -> dict[str, dict]:
        if self._latest is None or reload:
            self._latest = {}
            for p in answer_journals(self.out):
                self._latest.update({rec[self.key]: rec for rec in read_jsonl(p, self.check)})
        return self._latest


class ShardDone(Exception):
    """Raised by a rank's model once its share is answered: the rank's scoring would be of a part only."""


class ShardModel(VtcModel):
    """VtcModel answering only requests i with i mod world == rank (the rest are another rank's)."""

    def __init__(self, shard: tuple[int, int], **kwargs):
        super().__init__(**kwargs)
        self.shard = shard

    def generate_until(self, requests):
        rank, world = self.shard
        super().generate_until([req for i, req in enumerate(requests) if i % world == rank])
        raise ShardDone


class JournalModel(VtcModel):
    """Every request answered from the journals, no weights loaded: the merge of a sharded run. ``config``
    is the checkpoint's config (the FLOPs count reads it)."""

    def __init__(self, source, config, journal: AnswerJournal):
        from lmms_eval.api.model import lmms

        lmms.__init__(self)
        self.source, self.journal = source, journal
        self.runner = types.SimpleNamespace(model=types.SimpleNamespace(config=config))
        self.max_new_tokens, self.batch_size_per_gpu, self._batch, self.online = 0, 1, 1, None
        self.sample_log, self.resumed = [], 0
        self.progress = lambda total: contextlib.nullcontext()

    def _generate(self, todo, answers, bar) -> None:
        if todo:  # a rank reported success without answering its share: nothing here may make one up
            raise VtcError(
                f"{len(todo)} answers are in no journal of {self.journal.out} after every rank finished; "
                "re-run the same command"
            )


@dataclass(frozen=True)
class Launch:
    """This process's place in a run an outside launcher started (torchrun, accelerate launch)."""

    rank: int
    world: int
    local_rank: int
    local_world: int


def launched() -> Launch | None:
    """The launcher's WORLD_SIZE/RANK/LOCAL_RANK, or None outside a multi-process launch."""
    env = os.environ
    try:
        world = int(env.get("WORLD_SIZE") or 1)
        if world <= 1:
            return None
        if "RANK" not in env:
            raise VtcError(f"WORLD_SIZE={world} is set but RANK is not; launch with torchrun or accelerate")
        rank = int(env["RANK"])
        local_rank = int(env.get("LOCAL_RANK") or rank)
        local_world = int(env.get("LOCAL_WORLD_SIZE") or world)
    except ValueError:
        names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        raise VtcError(
            "launcher variables are not integers: " + ", ".join(f"{k}={env.get(k)!r}" for k in names)
        ) from None
    if not 0 <= rank < world:
        raise VtcError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Launch(rank, world, local_rank, local_world)


@contextlib.contextmanager
def single_process_env():
    """lmms-eval reads WORLD_SIZE/RANK itself and would shard the documents again and gather over
    torch.distributed; each rank runs it as a single process instead (vtc shards the requests). The
    variables are removed, not set to 1/0: accelerate's Accelerator, which lmms-eval creates, takes any
    LOCAL_RANK as a multi-process launch and waits for a rendezvous."""
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
    saved = {k: os.environ.pop(k, None) for k in names}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rank_device(device: str, local_rank: int, local_world: int) -> str:
    """The device of local rank ``local_rank``: cuda:LOCAL_RANK for ``cuda``, the same device otherwise."""
    if not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise VtcError(
            f"with {local_world} processes give --device cuda (process i uses cuda:i), not --device {device}"
        )
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < local_world:
        raise VtcError(f"{local_world} processes on --device cuda need {local_world} GPUs; {have} visible")
    return f"cuda:{local_rank}"


def share_cores(n: int) -> None:
    """N processes on one machine each get cores // N torch threads, so together they do not
    oversubscribe the CPU (which makes each of them slower than one process alone)."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // n))


def with_fail_hook(progress: Callable, rank: int) -> Callable:
    """``progress`` made to fail rank RANK after N answers when VTC_TEST_FAIL_RANK=RANK:N (tests only)."""
    spec = os.environ.get(FAIL_HOOK, "")
    target, _, after = spec.partition(":")
    if not spec or int(target) != rank:
        return progress

    @contextlib.contextmanager
    def failing(total: int):
        with progress(total) as bar:
            count = [0]

            def advance(n_items: int = 1, n_units: int = 0) -> None:
                bar.advance(n_items, n_units)
                count[0] += n_items
                if count[0] >= int(after):
                    raise RuntimeError(f"{FAIL_HOOK}: rank {rank} stops after {after} answers")

            yield types.SimpleNamespace(advance=advance)

    return failing


@contextlib.contextmanager
def silenced(verbose: bool):
    """A rank other than the parent keeps libraries' stderr to itself unless --verbose: the parent's
    merge pass shows lmms-eval's warnings (and the journals') once, not once per rank."""
    if verbose:
        yield
        return
    import logging

    # transformers' handler holds the stderr it was created with, so redirecting sys.stderr misses it
    hf = logging.getLogger("transformers")
    level = hf.level
    hf.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf.setLevel(level)


@contextlib.contextmanager
def _queue_progress(q, rank: int, parent: int, total: int):
    def advance(n_items: int = 1, n_units: int = 0) -> None:
        if os.getppid() != parent:  # the parent was killed (its lock is gone): stop writing the journal
            os._exit(1)
        q.put(("answered", rank, n_items))

    q.put(("todo", rank, total))
    yield types.SimpleNamespace(advance=advance)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _child(work: Callable, args: tuple, rank: int, world: int, q) -> None:
    """A spawned rank: ``work(*args, rank, world, progress)`` -> its report, or the one line it failed with."""
    parent = os.getppid()
    try:
        share_cores(world)
        report = work(*args, rank=rank, world=world, progress=lambda n: _queue_progress(q, rank, parent, n))
        q.put(("done", rank, report))
    except BaseException as e:
        if os.environ.get("VTC_DEBUG"):
            import traceback

            traceback.print_exc()
        q.put(("failed", rank, e.args[0] if isinstance(e, VtcError) else _one_line(e)))
        sys.exit(1)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code} without a report"


def run_ranks(work: Callable, args: tuple, world: int, progress: Callable) -> list[dict]:
    """Run ``work`` in ``world`` spawned processes (rank r gets ``rank=r``) and return their reports in
    rank order. ``progress(total)`` is the parent's bar, opened once every rank has said how many
    answers it has to make. The first rank to fail stops the others and raises one line naming it; so
    does Ctrl-C (after stopping them: the children ignore it)."""
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(work, args, r, world, q), name=f"vtc-eval-rank{r}")
        for r in range(world)
    ]
    reports: dict[int, dict] = {}
    failed: dict[int, str] = {}
    todo: dict[int, int] = {}
    answered = 0
    try:
        with contextlib.ExitStack() as stack:
            bar = None
            # The children start with Ctrl-C ignored (an ignored signal stays ignored across exec): the
            # parent alone gets it and stops them, so no child prints a half-imported traceback.
            main = threading.current_thread() is threading.main_thread()  # where signal handlers live
            handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
            try:
                for p in procs:
                    p.start()
            finally:
                if main:
                    signal.signal(signal.SIGINT, handler)

            def handle(msg) -> None:
                nonlocal answered, bar
                kind, rank, value = msg
                if kind == "todo":
                    todo[rank] = value
                    if len(todo) == world and bar is None:
                        bar = stack.enter_context(progress(sum(todo.values())))
                        bar.advance(answered, answered)
                elif kind == "answered":
                    answered += value
                    if bar is not None:
                        bar.advance(value, value)
                elif kind == "done":
                    reports[rank] = value
                elif kind == "failed":
                    failed[rank] = value

            def drain(seconds: float) -> None:
                with contextlib.suppress(queue.Empty):
                    while True:
                        handle(q.get(timeout=seconds))

            while not failed and len(reports) < world:
                with contextlib.suppress(queue.Empty):
                    handle(q.get(timeout=_POLL_S))
                dead = [r for r, p in enumerate(procs) if not p.is_alive() and r not in reports]
                if dead:
                    drain(_DRAIN_S)  # its report or its reason may still be in the pipe
                    for r in dead:
                        if r not in reports and r not in failed:
                            failed[r] = _exit_reason(procs[r].exitcode)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(_TERM_GRACE_S)
            if p.is_alive():
                p.kill()
                p.join()
        q.close()
    if failed:
        rank = min(failed)
        raise VtcError(
            f"rank {rank} of {world} failed: {failed[rank]} (answers so far are journalled; "
            "re-run the same command to resume)"
        )
    return [reports[r] for r in range(world)]
