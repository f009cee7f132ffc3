"""DecodeWorker: decode videos in a child process, one at a time, with a per-video timeout.

A native decoder can hang or segfault on one bad file; in a child process that costs one video, not the
run. The child also decodes the next video while the caller encodes the current one.

Protocol: the parent sends ``(job_id, path)`` down one pipe and reads ``(job_id, DecodedVideo |
VideoError)`` from another; frames of 1 MiB or more travel in a shared-memory block the parent copies
out of and removes (a dead child's unread blocks are removed when it is replaced). The child writes the id of the job it is decoding (and when it started) to
shared memory, so after a hang or a crash the parent knows exactly which video it was, even when the
child died with finished results still unsent, and puts the others back in line on a fresh child.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import itertools
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from vtc.video.decode import BACKENDS, DecodedVideo, VideoError, _check_size, one_line, set_threads
from vtc.video.sampling import SamplingPolicy

_STARTUP_GRACE = 60.0  # extra seconds a fresh child may take to reach a job (interpreter start, imports)
_CLOSE_GRACE = 2.0  # seconds an idle child gets to exit on close() before it is killed
_IDLE = -1  # shared job id while the child is between jobs
_SHARED_MIN_BYTES = 1 << 20  # smaller frames travel in the message: a block costs two syscalls and a mapping
_CANCEL_POLL = 0.25  # seconds between checks of DecodeWorker.cancel() while waiting for a decode


class _Cancelled(Exception):
    """A DecodeWorker's imap was cancelled from another thread."""


@dataclass
class _Job:
    id: int
    path: object
    deaths: int = 0  # child deaths while this job waited without having started


class DecodeWorker:
    """Decodes videos in a separate process (multiprocessing 'spawn' context) so a decoder that hangs or
    crashes on one file cannot hang or kill the run. Also gives overlap: the next video decodes while the
    caller encodes the current one.

    ``imap(paths)`` yields ``(path, DecodedVideo | VideoError)`` in input order. A decode that runs past
    ``timeout`` seconds (None: no limit) yields ``VideoError("decode timed out after 120s")``; a child
    that dies yields ``VideoError("decoder crashed (exit code -11, SIGSEGV)")``. Either way the child is
    replaced by a fresh one and the run goes on with the next path. ``prefetch`` videos are decoded ahead
    of the one being consumed (their frames are held in memory). One ``imap`` at a time.

    The child starts at construction (spawn + imports: about 0.5 s on 2 cores, overlapping the caller's own
    start-up). With 'spawn', a script that creates a DecodeWorker must guard its entry point with
    ``if __name__ == "__main__":``. ``_decode_fn="module:function"`` replaces ``decode_video`` in the child
    (tests inject hangs and crashes with it); it is called as ``fn(path, policy, backend=, size=)``.
    """

    def __init__(
        self,
        policy: SamplingPolicy,
        backend: str = "decord",
        size: tuple[int, int] | None = (384, 384),
        timeout: float | None = 120.0,
        prefetch: int = 1,
        threads: int = 0,
        _decode_fn: str | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown decoder backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {timeout!r}")
        if not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be a non-negative integer, got {prefetch!r}")
        if _decode_fn is not None and ":" not in _decode_fn:
            raise ValueError(f"_decode_fn must be 'module:function', got {_decode_fn!r}")
        if not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be a non-negative integer, got {threads!r}")
        _resolve(_decode_fn)  # fail here, not once per video in the child
        self.policy, self.backend, self.size, self.threads = policy, backend, _check_size(size), threads
        self.timeout, self.prefetch, self._decode_fn = timeout, prefetch, _decode_fn
        self._ctx = multiprocessing.get_context("spawn")
        self._ids = itertools.count()
        self._proc = None
        self._closed = False
        self._busy = False
        self._early: dict[int, object] = {}  # results that arrived out of turn (a crash attributed later)
        # Shared-memory blocks are named after the job (vtc_<token>_<job id>), so the blocks of jobs a dead
        # child took with it (made, never received) can be removed by name.
        self._token = f"{os.getpid()}_{uuid.uuid4().hex[:12]}"
        _sweep_orphans()
        self._unreceived: set[int] = set()
        self._cancel = threading.Event()  # set from another thread: the running imap stops (DecodePool)
        self._start()

    # --- public ---------------------------------------------------------------------------------------

    def imap(self, paths: Iterable) -> Iterator[tuple[object, DecodedVideo | VideoError]]:
        """Decode each path; yield (path, DecodedVideo or VideoError) in input order."""
        if self._closed:
            raise RuntimeError("DecodeWorker is closed")
        if self._busy:
            raise RuntimeError("DecodeWorker.imap is already running (one at a time)")
        self._busy = True
        self._cancel.clear()
        source = iter(paths)
        pending: deque[_Job] = deque()
        try:
            while True:
                while len(pending) <= self.prefetch:
                    path = next(source, _END)
                    if path is _END:
                        break
                    pending.append(_Job(next(self._ids), path))
                    self._submit(pending[-1])
                if not pending:
                    return
                result = self._wait(pending)
                yield pending.popleft().path, result
        finally:
            self._busy = False
            if pending:  # abandoned mid-way: drop what the child still has queued
                self._kill()
                self._early.clear()

    def cancel(self) -> None:
        """From another thread: the running ``imap`` ends within a quarter second, waiting or not (it
        raises ``_Cancelled`` in the thread that drives it, which then drops what its child has queued)."""
        self._cancel.set()

    def close(self):
        """Stop the child (killed if it does not exit within a couple of seconds). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._proc is not None:
            with contextlib.suppress(OSError, ValueError):
                self._jobs.send(None)
            self._proc.join(_CLOSE_GRACE)
        self._kill()

    def __enter__(self) -> DecodeWorker:
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the child process ----------------------------------------------------------------------------

    def _start(self):
        jobs_r, jobs_w = self._ctx.Pipe(duplex=False)
        results_r, results_w = self._ctx.Pipe(duplex=False)
        # [running job id, its start time (time.monotonic, system-wide)]; no lock: a child killed while
        # holding it would deadlock us, and only the child writes
        self._state = self._ctx.Array("d", [_IDLE, 0.0], lock=False)
        self._proc = self._ctx.Process(
            target=_child_main,
            args=(jobs_r, results_w, self._state, self._config(), os.getpid()),
            name="vtc-decode",
            daemon=True,
        )
        self._proc.start()
        jobs_r.close()  # ours must be closed so a dead child reads as EOF
        results_w.close()
        self._jobs, self._results = jobs_w, results_r
        self._started_at = time.monotonic()

    def _config(self) -> tuple:
        return self.policy, self.backend, self.size, self.threads, self._decode_fn, self._token

    def _kill(self):
        """Kill the child now (if any) and forget it; the next submit starts a fresh one."""
        if self._proc is None:
            return
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        _drain(self._results)
        for job_id in self._unreceived:  # made by the dead child, maybe, and now nobody's
            _unlink(_block_name(self._token, job_id))
        self._unreceived.clear()
        for conn in (self._jobs, self._results):
            conn.close()
        self._proc.close()
        self._proc = None

    def _submit(self, job: _Job):
        if self._proc is None:
            self._start()
        self._unreceived.add(job.id)
        with contextlib.suppress(OSError):  # a dead child: _wait notices and resubmits
            self._jobs.send((job.id, os.fspath(job.path)))

    def _running(self) -> tuple[int, float]:
        job_id, started = self._state[0], self._state[1]
        return int(job_id), float(started)

    def _restart(self, jobs):
        """Fresh child; resubmit ``jobs`` (still waiting) in order."""
        self._kill()
        for job in jobs:
            if job.id not in self._early:
                self._submit(job)
        if self._proc is None and not self._closed:
            self._start()

    # --- waiting for the head of the line -------------------------------------------------------------

    def _wait(self, pending: deque[_Job]):
        head = pending[0]
        waiting_since = time.monotonic()
        while True:
            if head.id in self._early:
                return self._early.pop(head.id)
            if self._closed:
                raise RuntimeError("DecodeWorker was closed during imap")
            if self._cancel.is_set():
                raise _Cancelled
            if self._proc is None:  # killed after an abandoned imap, or a failed restart
                self._restart(pending)
            if self._results.poll():
                try:
                    job_id, result = self._results.recv()
                    self._unreceived.discard(job_id)
                    result = _from_shared(result)
                except Exception:  # EOF, or a message cut short by the child's death
                    out = self._on_death(pending)
                    if out is not None:
                        return out
                    waiting_since = time.monotonic()
                    continue
                if job_id == head.id:
                    return result
                if any(j.id == job_id for j in pending):
                    self._early[job_id] = result
                continue
            if not self._proc.is_alive():
                out = self._on_death(pending)
                if out is not None:
                    return out
                waiting_since = time.monotonic()
                continue
            budget = None
            if self.timeout is not None:
                running, started = self._running()
                if running == head.id:
                    deadline = started + self.timeout
                else:  # not started yet (child starting up) or finished and its result on the way
                    deadline = max(waiting_since, self._started_at) + self.timeout + _STARTUP_GRACE
                budget = deadline - time.monotonic()
                if budget <= 0:
                    self._restart(list(pending)[1:])
                    if running == head.id:
                        return VideoError(f"decode timed out after {self.timeout:g}s")
                    return VideoError(f"decoder did not start within {self.timeout + _STARTUP_GRACE:g}s")
            # in slices, so that a cancel() is seen
            slice_s = _CANCEL_POLL if budget is None else min(budget, _CANCEL_POLL)
            multiprocessing.connection.wait([self._results, self._proc.sentinel], slice_s)

    def _on_death(self, pending: deque[_Job]):
        """The child died: blame the job it was running, put the rest back in line on a fresh child.

        Returns the head's result if the head is decided, else None (keep waiting).
        """
        running, _ = self._running()
        if self._proc.is_alive():  # alive but its message did not unpickle: it cannot be trusted either
            self._proc.kill()
        self._proc.join()
        code = self._proc.exitcode
        head = pending[0]
        crash = VideoError(f"decoder crashed ({_exit_text(code)})")
        if running != _IDLE and any(j.id == running for j in pending):
            if running == head.id:
                self._restart(list(pending)[1:])
                return crash
            self._early[running] = crash  # a later job crashed; the head's result was lost with the child
            self._restart(pending)
            return None
        # Died between jobs (start-up, killed from outside): retry, but not forever.
        head.deaths += 1
        if head.deaths >= 2:
            self._restart(list(pending)[1:])
            return VideoError(f"decoder process keeps dying before it decodes ({_exit_text(code)})")
        self._restart(pending)
        return None


_END = object()


def _exit_text(code) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"exit code {code}, {signal.Signals(-code).name}"
    return f"exit code {code}"


def _resolve(spec: str | None):
    if spec is None:
        from vtc.video.decode import decode_video

        return decode_video
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _child_main(jobs, results, state, config, parent_pid):
    """The child's loop: decode each (job_id, path) received, send (job_id, result) back."""
    policy, backend, size, threads, decode_fn, token = config
    set_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it closes or kills us
    if not os.environ.get("VTC_DEBUG"):
        # FFmpeg and decord print a line per damaged packet straight to fd 2, over the caller's progress
        # bar; reasons reach the caller as VideoError messages instead (VTC_DEBUG=1 keeps them)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    fn = _resolve(decode_fn)
    with contextlib.suppress(Exception):  # warm up: the first video should not pay for the imports
        importlib.import_module({"decord": "decord", "pyav": "av"}[backend])
        importlib.import_module("PIL.Image")
    # Results go out from a thread, so the next video decodes while a big result is still being read.
    outbox: queue.Queue = queue.Queue()
    sender = threading.Thread(target=_send_all, args=(outbox, results), daemon=True)
    sender.start()
    while True:
        try:
            msg = jobs.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        job_id, path = msg
        state[1] = time.monotonic()
        state[0] = job_id
        try:
            result = fn(path, policy, backend=backend, size=size)
        except VideoError as e:
            result = VideoError(str(e))
        except Exception as e:
            result = VideoError(f"decoder error: {type(e).__name__}: {one_line(e)}")
        state[0] = _IDLE  # before the result is queued: dying from here on is not this video's fault
        outbox.put((job_id, _to_shared(result, _block_name(token, job_id))))
    outbox.put(None)
    sender.join()


def _send_all(outbox: queue.Queue, conn):
    while (item := outbox.get()) is not None:
        try:
            conn.send(item)
        except (BrokenPipeError, EOFError, ConnectionError):
            os._exit(0)  # the parent is gone
        except Exception as e:  # a result that does not pickle (a custom _decode_fn)
            conn.send((item[0], VideoError(f"decoder result cannot be sent: {one_line(e)}")))


@dataclass
class _SharedFrames:
    """A DecodedVideo whose frames wait in a shared-memory block (``name``) instead of the message."""

    name: str
    shape: tuple
    dtype: str
    video: DecodedVideo  # with an empty frames array


def _block_name(token: str, job_id: int) -> str:
    return f"vtc_{token}_{job_id}"  # token: the owner's pid, then a random part


def _sweep_orphans() -> None:
    """Remove the blocks of owners that are gone. A run killed whole (its process group with SIGKILL)
    takes its resource tracker with it, so blocks in flight then would stay until reboot."""
    shm = Path("/dev/shm")  # where POSIX shared memory is visible on Linux; elsewhere nothing to sweep
    if not shm.is_dir():
        return
    for p in shm.glob("vtc_*_*_*"):
        pid = p.name.split("_")[1]
        if pid.isdigit() and not _alive(int(pid)):
            _unlink(p.name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process (or no valid pid): leave it
        return True
    return True


def _unlink(name: str) -> None:
    with contextlib.suppress(OSError):
        shm = shared_memory.SharedMemory(name=name)
        shm.close()
        shm.unlink()


def _to_shared(result, name: str):
    """In the child: a DecodedVideo's frames go into a fresh shared-memory block, so the message carries
    a name instead of megabytes to pickle, push through a pipe and unpickle (32 frames at 384x384 are
    14 MB; a GPU fed by 16 decoders receives some 40 of those a second). The parent unlinks the block."""
    if not isinstance(result, DecodedVideo) or result.frames.nbytes < _SHARED_MIN_BYTES:
        return result
    frames = np.ascontiguousarray(result.frames)
    shm = shared_memory.SharedMemory(name=name, create=True, size=frames.nbytes)
    try:
        np.ndarray(frames.shape, frames.dtype, buffer=shm.buf)[...] = frames
        video = dataclasses.replace(result, frames=frames[:0])
        return _SharedFrames(shm.name, frames.shape, frames.dtype.str, video)
    finally:
        shm.close()


def _from_shared(result):
    """In the parent: the frames copied out of their block, and the block removed."""
    if not isinstance(result, _SharedFrames):
        return result
    try:
        shm = shared_memory.SharedMemory(name=result.name)
    except OSError as e:
        return VideoError(f"decoded frames were lost in shared memory ({one_line(e)})")
    try:
        frames = np.ndarray(result.shape, np.dtype(result.dtype), buffer=shm.buf).copy()
    finally:
        shm.close()
        shm.unlink()
    return dataclasses.replace(result.video, frames=frames)


def _drain(conn) -> None:
    """Results of a dead child nobody will read: their shared-memory blocks are removed now, not left
    to the resource tracker's warning at exit."""
    with contextlib.suppress(Exception):  # EOF, or the dying child's last message cut short
        while conn.poll(0):
            _, result = conn.recv()
            if isinstance(result, _SharedFrames):
                _unlink(result.name)


def _exit_with_parent(parent_pid: int):
    """A child stuck in a hung decode must not outlive a parent killed with SIGKILL."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


class DecodePool:
    """``n`` DecodeWorkers decoding in parallel (each its own process, its own timeout and crash recovery).

    ``imap(paths)`` yields ``(path, DecodedVideo | VideoError)`` in input order, video i decoded by worker
    i mod n: what the caller does with the results (vtc extract writes them) does not depend on ``n`` or
    on which decode finishes first. Each worker is driven by a thread that holds at most one finished
    video for the caller, beyond the ``prefetch`` its own child decodes ahead. ``n = 1`` is one
    DecodeWorker and no thread. Unless ``threads`` is given, each child's decoder gets ``cores // n``
    threads (at least 1): n processes each using every core would fight each other and the tower.
    """

    def __init__(self, n: int, policy: SamplingPolicy, **kwargs):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"workers must be a positive integer, got {n!r}")
        kwargs.setdefault("threads", max(1, (os.cpu_count() or 1) // n))
        self.workers: list[DecodeWorker] = []
        try:
            for _ in range(n):
                self.workers.append(DecodeWorker(policy, **kwargs))
        except BaseException:
            self.close()
            raise

    def imap(self, paths: Iterable) -> Iterator[tuple[object, DecodedVideo | VideoError]]:
        paths = list(paths)
        n = len(self.workers)
        if n == 1:
            yield from self.workers[0].imap(paths)
            return
        queues: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in range(n)]
        stop = threading.Event()

        def drive(k: int) -> None:
            gen = self.workers[k].imap(paths[k::n])
            try:
                for item in gen:
                    while not stop.is_set():
                        try:
                            queues[k].put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except _Cancelled:
                return
            except BaseException as e:  # handed to the caller, raised there (unless it has gone)
                with contextlib.suppress(queue.Full):
                    queues[k].put_nowait(_Raised(e))
            finally:
                gen.close()  # an abandoned run: the worker drops what its child still has queued

        threads = [
            threading.Thread(target=drive, args=(k,), name=f"vtc-decode-{k}", daemon=True) for k in range(n)
        ]
        for t in threads:
            t.start()
        try:
            for i in range(len(paths)):
                item = queues[i % n].get()
                if isinstance(item, _Raised):
                    raise item.error
                yield item
        finally:
            stop.set()
            for w in self.workers:  # a thread inside a long decode stops waiting for it
                w.cancel()
            for q in queues:  # unblock a thread waiting to hand over a result
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()
            for t in threads:  # each worker is touched by its own thread only, until here
                t.join()

    def close(self) -> None:
        for w in self.workers:
            w.close()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class _Raised:
    error: BaseException
