"""`vtc extract --engine ray`: the extract stage as a Ray Data pipeline, writing the same store.

Per window of videos (in input order) one dataset runs::

    from_items(rows) -> decode (CPU tasks, one video each) -> encode (actor pool, the tower loaded once
    per actor) -> _StoreSink.write (tasks: Record.put, the arrays and attrs) -> on_write_complete (driver:
    Store.commit, in input order)

Why windows. Ray Data calls ``on_write_complete`` once, after the last write of a dataset; one dataset over
every video would commit nothing until the very end, so an interrupted run would keep nothing. Each window
is its own dataset whose sink commits when it completes: an interrupt loses at most the window in flight
(its arrays are put but unindexed, and the next run rewrites them). The price is that every window starts
its encoder actors afresh (the tower loads again, once per actor per window) and drains at its end, so
windows are large: ``max(32, 8 * actors)`` videos. Streaming the put entries back to the driver through
``iter_rows`` would commit per video without windows, but then the sink (Ray's write contract, its
retries and failure hooks) would be bypassed; windows keep that contract and bound the loss.

Ray's retries cannot duplicate or tear an entry: a put rewrites the video's group from scratch with the
same bytes (``Store.put``), a put is invisible until the driver commits its entry, and the driver commits
each input row once, in input order, from the window's results (a retried write's second entry is the
same entry and is dropped). A dead encoder actor is restarted and its video retried (Ray Data's actor
defaults). The driver holds the store's write lock for the whole run, as the local engine does.

Decoding runs in each Ray worker's :class:`DecodeWorker` (a child process kept for the worker's life), so
a decoder that hangs or segfaults costs one video (a recorded failure), not the task or the job; the
per-video timeout is the DecodeWorker's. ``--workers`` is the number of decode tasks running at once
(default: the cluster's CPUs less those the encoder actors hold). Encoder actors hold a CPU each and,
with ``--device cuda``, a GPU each (default: one actor per GPU in the cluster; on CPU, one actor).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import re
import socket
import time
import uuid
from pathlib import Path

import numpy as np

from vtc.errors import VtcError
from vtc.stages.extract import ExtractOptions, ExtractSummary, encode, plan, record_failure
from vtc.stages.progress import progress_bar

try:
    from ray.data import Datasink
except ImportError:  # ray is optional; extract() says how to install it
    Datasink = object

WINDOW_MIN = 32  # videos per dataset at least; see the module docstring
WINDOW_PER_ACTOR = 8  # ... and this many per encoder actor, so each tower load serves several videos
_PROBE_TIMEOUT = 5.0  # seconds to reach a cluster's port before `--address` is called unreachable


def import_ray():
    """ray and ray.data, or a one-line error saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise VtcError("--engine ray needs Ray Data: pip install 'vtc[ray]'") from None
    return ray


def extract(
    opt: ExtractOptions,
    quiet: bool = False,
    console=None,
    address: str | None = None,
    actors: int | None = None,
    _decode_fn: str | None = None,
    _die_marker: str | None = None,
) -> ExtractSummary:
    """The local engine's :func:`vtc.stages.extract.extract` on a Ray cluster: same store, same summary.

    ``address``: None starts a local Ray (or uses the one this process has already initialised), "auto"
    joins the cluster running on this node, "ray://host:10001" goes through Ray Client. ``actors``:
    encoder actors (see the module docstring). Test hooks: ``_decode_fn`` as in the local engine;
    ``_die_marker``, a file path: the encoder actor that manages to delete it exits at once (simulating a
    lost worker).
    """
    import_ray()
    if actors is not None and actors < 1:
        raise VtcError(f"--actors must be >= 1, got {actors}")
    if address not in (None, "auto"):
        _probe(address)  # before plan creates the store
    p = plan(opt)
    st, summary = p.store, p.summary
    if not p.todo:
        return summary
    t0 = time.perf_counter()
    with (
        st.discarded_on_error(),
        st.writing(),
        ray_session(address, quiet) as ray,
        _quiet_data(ray),
        progress_bar("extract", len(p.todo), "frames", quiet=quiet, console=console) as bar,
        vtc_errors_unwrapped(),
    ):
        gpu = opt.device.startswith("cuda")
        resources = ray.cluster_resources()
        if gpu and resources.get("GPU", 0) < 1:
            raise VtcError(f"--device {opt.device}: the Ray cluster has no GPU")
        pool = actors or (int(resources.get("GPU", 0)) if gpu else 1)
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        # An oversized pool would hang, not fail: actors waiting for GPUs that are not there, or holding
        # every CPU so that no decode task ever runs.
        if gpu and pool > gpus:
            raise VtcError(f"--actors {pool}: the Ray cluster has {gpus} GPU(s), one per encoder actor")
        if pool >= cpus:
            raise VtcError(
                f"--actors {pool}: the Ray cluster has {cpus} CPU(s); each encoder actor holds one and "
                "decoding needs at least one more"
            )
        if opt.workers is None:  # plan's default counts this machine's cores, not the cluster's
            summary.workers = cpus - pool
        window = max(WINDOW_MIN, WINDOW_PER_ACTOR * pool)
        decode_args = {
            "policy": p.policy,
            "backend": opt.backend,
            "size": p.encoder.decode_size,
            "timeout": opt.timeout,
            "decode_fn": _decode_fn,
        }
        store_path = shared_path(st.path)
        for start in range(0, len(p.todo), window):
            todo = p.todo[start : start + window]

            def commit(results: list[dict], todo=todo) -> None:
                _commit(st, summary, todo, results, bar)

            with _registered(commit) as token:
                ds = ray.data.from_items(
                    [{"i": i, "id": vid, "path": str(path)} for i, (vid, path) in enumerate(todo)],
                    override_num_blocks=len(todo),
                )
                ds = ds.map_batches(
                    _decode,
                    batch_size=1,
                    fn_kwargs=decode_args,
                    compute=ray.data.TaskPoolStrategy(size=summary.workers),
                    num_cpus=1,
                    # Workers live on, each keeping its decode child (Ray's default for CPU tasks, said
                    # here because it matters); and a remote arg the actors lack keeps Ray Data from fusing
                    # these tasks into the encoder actors, which would then decode and encode in turn.
                    max_calls=0,
                )
                ds = ds.map_batches(
                    _Encoder,
                    batch_size=1,
                    fn_constructor_kwargs={"opt": opt, "die_marker": _die_marker},
                    compute=ray.data.ActorPoolStrategy(size=min(pool, len(todo))),
                    num_cpus=1,  # the tower's own work on CPU; a GPU's preprocessing and copies
                    num_gpus=1 if gpu else 0,
                )
                # Writers wait on the disk, not the CPU; holding a CPU slot they could queue behind the
                # decode tasks that fill the cluster while the encoders wait for them to drain.
                ds.write_datasink(
                    StoreSink(store_path, "features", token),
                    ray_remote_args={"num_cpus": 0},
                    concurrency=min(max(2, pool), len(todo)),
                )
    summary.seconds = time.perf_counter() - t0
    return summary


# ---------------------------------------------------------------------------------------- the driver


def _commit(st, summary: ExtractSummary, todo: list, results: list[dict], bar) -> None:
    """Index a window's results in input order, each video once (a retried write returns its entry
    again); a video the pipeline lost (none so far) is recorded as failed, so the next run redoes it."""
    by_row: dict[int, dict] = {}
    for r in results:
        by_row.setdefault(r["i"], r)
    for i, (vid, path) in enumerate(todo):
        r = by_row.get(i)
        reason = (
            "no result from the Ray pipeline; re-run to retry" if r is None or r["id"] != vid else r["reason"]
        )
        if reason:
            record_failure(st, summary, vid, path, reason)
            bar.note(f"[yellow]skipped[/] {vid}: {reason}")
            bar.advance(1, 0)
        else:
            st.commit(r["entry"])
            summary.done += 1
            summary.frames += r["n_frames"]
            bar.advance(1, r["n_frames"])


# The sink is pickled into every write task and Ray Data may copy it on the driver too, so it carries a
# token, and the driver's commit function (which holds the store, the summary and the bar) stays here.
_COMMITTERS: dict[str, object] = {}


@contextlib.contextmanager
def _registered(fn):
    token = uuid.uuid4().hex
    _COMMITTERS[token] = fn
    try:
        yield token
    finally:
        del _COMMITTERS[token]


@contextlib.contextmanager
def ray_session(address: str | None, quiet: bool = False):
    """Ray, initialised: this process's existing session if it has one, else one started (address None)
    or joined (``address``) here and shut down on exit. An unreachable address is a one-line VtcError."""
    import logging

    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=not quiet,
            logging_level=logging.ERROR if quiet else logging.WARNING,
        )
    except (ConnectionError, OSError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise VtcError(f"cannot reach {where}: {_first_line(e)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def shared_path(path) -> str:
    """A store's path as every node names it: absolute (on the shared filesystem), or a URL as given."""
    return str(path) if "://" in str(path) else str(Path(path).resolve())


def _probe(address: str) -> None:
    """Fail in seconds on a host:port nobody listens on (Ray itself retries for a minute or more)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise VtcError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_TIMEOUT).close()
    except OSError as e:
        raise VtcError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


@contextlib.contextmanager
def vtc_errors_unwrapped():
    """A VtcError raised in a task or actor (a checkpoint whose weights do not load) comes back from Ray
    as its own error type, with the original only in its text: raise it as the one-line VtcError again."""
    try:
        yield
    except VtcError:
        raise
    except Exception as e:
        seen, x = 0, e
        while x is not None and seen < 8:
            m = re.search(r"vtc\.errors\.VtcError: ([^\n]+)", str(x))
            if isinstance(x, VtcError) or m:
                raise VtcError(str(x) if isinstance(x, VtcError) else m.group(1).strip()) from None
            x, seen = getattr(x, "cause", None) or x.__cause__ or x.__context__, seen + 1
        raise


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


@contextlib.contextmanager
def _quiet_data(ray):
    """Ray Data's own progress bars and per-dataset log lines off for the run (vtc shows one bar, and
    prints failures itself); the process-wide context and log level are restored afterwards."""
    import logging

    ctx = ray.data.DataContext.get_current()
    keys = ("enable_progress_bars", "print_on_execution_start", "enable_auto_log_stats")
    saved = {k: getattr(ctx, k) for k in keys}
    log = logging.getLogger("ray.data")
    level = log.level
    for k in keys:
        setattr(ctx, k, False)
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
        for k, v in saved.items():
            setattr(ctx, k, v)


# ---------------------------------------------------------------------------------------- the workers

_DECODERS: dict[tuple, object] = {}  # per Ray worker process: one DecodeWorker child per configuration


def _decode(batch: dict, policy, backend, size, timeout, decode_fn) -> dict:
    """A decode task: each video decoded in this worker's DecodeWorker child, shipped pickled (frames,
    indices, timestamps and metadata byte for byte), or the reason it could not be."""
    from vtc.video import DecodeWorker, VideoError

    key = (repr(policy), backend, size, timeout, decode_fn)
    worker = _DECODERS.get(key)
    if worker is None:
        # one decoder thread: the task holds one CPU, and the cluster's others are other tasks' and actors'
        worker = _DECODERS[key] = DecodeWorker(
            policy, backend=backend, size=size, timeout=timeout, prefetch=0, threads=1, _decode_fn=decode_fn
        )
    payloads, reasons = [], []
    for path in batch["path"]:
        _, result = next(iter(worker.imap([str(path)])))
        bad = isinstance(result, VideoError)
        payloads.append(b"" if bad else pickle.dumps(result, protocol=5))
        reasons.append(str(result) if bad else "")
    return _rows(batch, payloads, reasons)


class _Encoder:
    """An encoder actor: the tower loaded once, then each decoded video to a pickled Record."""

    def __init__(self, opt: ExtractOptions, die_marker: str | None = None):
        from vtc.encoders.vision import make_encoder

        self.opt, self.die_marker = opt, die_marker
        # Ray gives a GPU actor its own GPU as the only visible one: "cuda:1" would name none.
        device = "cuda" if opt.device.startswith("cuda") else opt.device
        self.encoder = make_encoder(
            opt.model,
            device=device,
            dtype=opt.dtype,
            layer=opt.layer,
            pixels=(opt.min_pixels, opt.max_pixels),
        )
        self.encoder.load()

    def __call__(self, batch: dict) -> dict:
        payloads, reasons = [], []
        for path, payload, reason in zip(batch["path"], batch["payload"], batch["reason"], strict=True):
            if self.die_marker and _claim(self.die_marker):
                os._exit(1)
            if reason:
                payloads.append(b"")
                reasons.append(str(reason))
                continue
            rec = encode(self.encoder, pickle.loads(payload), str(path), self.opt)
            payloads.append(b"" if isinstance(rec, str) else pickle.dumps(rec, protocol=5))
            reasons.append(rec if isinstance(rec, str) else "")
        return _rows(batch, payloads, reasons)


def _claim(marker: str) -> bool:
    try:
        os.unlink(marker)  # atomic: exactly one actor succeeds
    except FileNotFoundError:
        return False
    return True


def _rows(batch: dict, payloads: list[bytes], reasons: list[str]) -> dict:
    return {
        "i": np.asarray(batch["i"], dtype=np.int64),
        "id": np.asarray([str(v) for v in batch["id"]], dtype=object),
        "path": np.asarray([str(v) for v in batch["path"]], dtype=object),
        "payload": np.asarray(payloads, dtype=object),
        "reason": np.asarray(reasons, dtype=object),
    }


_STORES: dict[tuple[str, str], object] = {}  # per Ray worker process: (path, kind) -> Store


class StoreSink(Datasink):
    """Puts each row's pickled :class:`~vtc.stages.extract.Record` (``write``, in tasks) and has the
    driver commit the entries (``on_write_complete``). A retried write puts the same bytes and returns
    the same entries. Rows carry ``id``, ``payload``, ``reason`` (a failure: nothing to put) and, where
    the driver commits by position, ``i``. The extract and compress engines both write through it."""

    def __init__(self, store_path: str, kind: str, token: str):
        self.store_path, self.kind, self.token = store_path, kind, token

    def write(self, blocks, ctx) -> list[dict]:
        from ray.data.block import BlockAccessor

        from vtc.cache import Store

        st = _STORES.get((self.store_path, self.kind))
        if st is None:
            st = _STORES[(self.store_path, self.kind)] = Store.open(self.store_path, kind=self.kind)
        out = []
        for block in blocks:
            for row in BlockAccessor.for_block(block).iter_rows(public_row_format=True):
                r = {"id": str(row["id"]), "reason": str(row["reason"] or "")}
                if "i" in row:
                    r["i"] = int(row["i"])
                if not r["reason"]:
                    rec = pickle.loads(row["payload"])
                    r["entry"], r["n_frames"] = rec.put(st, r["id"]), rec.n_frames
                out.append(r)
        return out

    def on_write_complete(self, write_result) -> None:
        _COMMITTERS[self.token](list(itertools.chain.from_iterable(write_result.write_returns)))

    def get_name(self) -> str:
        return f"Vtc{self.kind.capitalize()}Store"
