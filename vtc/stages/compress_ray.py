"""`vtc compress --engine ray`: the compress stage as Ray Data tasks, writing the same token store.

Per window of videos (in the feature store's order) one dataset runs::

    from_items(one row per batch of --batch-size videos) -> reduce (tasks: load, reduce_batch, the arrays
    each video stores) -> StoreSink.write (tasks: Store.put) -> on_write_complete (driver: commit)

as :mod:`vtc.stages.extract_ray` does, for the same reasons (windows: an interrupt keeps every finished
window; puts are idempotent and invisible until the driver commits them, once each, in order). The
batches are the local engine's (consecutive videos, the same seeds), and within a batch the driver
commits failures first and then the reduced videos, as the local engine writes them: the token store's
index lines match the local engine's but for ``time`` and ``reduce_s`` (a measured time), and its arrays
are the same bytes. A reducer needs no model, so tasks suffice (no actors): one CPU each, or one GPU each
with ``--device cuda``; at most the cluster's CPUs (GPUs) at once.

The setup, the reading of a video and the reduction of a batch are the local engine's own functions
(:func:`vtc.stages.compress.setup`, ``open_output``, ``load_video``, ``reduce_videos``).
"""

from __future__ import annotations

import dataclasses
import pickle
import time

import numpy as np

from vtc.cache import Store
from vtc.errors import VtcError
from vtc.stages.compress import (
    CompressOptions,
    CompressSummary,
    Setup,
    load_video,
    open_output,
    reduce_videos,
    setup,
    totals,
)
from vtc.stages.extract import Record
from vtc.stages.extract_ray import (
    StoreSink,
    _probe,
    _quiet_data,
    _registered,
    import_ray,
    ray_session,
    shared_path,
    vtc_errors_unwrapped,
)
from vtc.stages.progress import progress_bar

WINDOW_MIN = 64  # videos per dataset at least (a whole number of batches); see the module docstring


def compress(
    opt: CompressOptions, quiet: bool = False, console=None, address: str | None = None
) -> CompressSummary:
    """The local engine's :func:`vtc.stages.compress.compress` on a Ray cluster: same token store, same
    summary. ``address`` as for :func:`vtc.stages.extract_ray.extract`."""
    import_ray()
    if address not in (None, "auto"):
        _probe(address)  # before the output store is made
    s = setup(opt)
    tok, summary, todo = open_output(opt, s)
    config = s.config
    t0 = time.perf_counter()
    # Workers read the feature store on their own: absolute paths, the same on every node.
    # Ray shows a GPU task its own GPU as the only one: "cuda:1" would name none.
    task_opt = dataclasses.replace(
        opt,
        store=shared_path(opt.store),
        batch_size=s.batch_size,
        device="cuda" if opt.device.startswith("cuda") else opt.device,
    )
    with (
        tok.discarded_on_error(),
        tok.writing(),
        ray_session(address, quiet) as ray,
        _quiet_data(ray),
        progress_bar(f"compress {config['method']}", len(todo), "videos", quiet, console) as bar,
        vtc_errors_unwrapped(),
    ):
        resources = ray.cluster_resources()
        gpu = opt.device.startswith("cuda")
        if gpu and resources.get("GPU", 0) < 1:
            raise VtcError(f"--device {opt.device}: the Ray cluster has no GPU")
        slots = max(1, int(resources.get("GPU" if gpu else "CPU", 1)))
        bs = s.batch_size
        window = -(-max(WINDOW_MIN, 2 * slots * bs) // bs) * bs
        tok_path = shared_path(tok.path)
        for start in range(0, len(todo), window):
            vids = todo[start : start + window]
            batches = [vids[b : b + bs] for b in range(0, len(vids), bs)]

            def commit(results: list[dict], vids=vids) -> None:
                _commit(tok, summary, vids, bs, results, bar)

            with _registered(commit) as token:
                ds = ray.data.from_items(
                    [{"ids": batch} for batch in batches],
                    override_num_blocks=len(batches),
                )
                ds = ds.map_batches(
                    _reduce,
                    batch_size=1,
                    fn_kwargs={"opt": task_opt},
                    compute=ray.data.TaskPoolStrategy(size=min(slots, len(batches))),
                    num_cpus=1,
                    num_gpus=1 if gpu else 0,
                    # workers live on with their reducer set up (Ray ends a GPU task's worker after one
                    # call by default: a new process, torch imported again, for every batch)
                    max_calls=0,
                )
                ds.write_datasink(
                    StoreSink(tok_path, "tokens", token),
                    ray_remote_args={"num_cpus": 0},  # as in extract_ray: writers must not wait for a CPU
                    concurrency=min(2, len(batches)),
                )
    summary.seconds = time.perf_counter() - t0
    return totals(tok, summary)


def _commit(tok: Store, summary: CompressSummary, vids: list[str], bs: int, results: list[dict], bar) -> None:
    """Commit a window as the local engine writes it: batch by batch, a batch's failures first, then its
    reduced videos, each in input order; each video once (a retried write returns its entry again)."""
    by_id: dict[str, dict] = {}
    for r in results:
        by_id.setdefault(r["id"], r)
    lost = "no result from the Ray pipeline; re-run to retry"
    for b in range(0, len(vids), bs):
        batch = [by_id.get(v) or {"id": v, "reason": lost} for v in vids[b : b + bs]]
        for r in [r for r in batch if r["reason"]] + [r for r in batch if not r["reason"]]:
            if r["reason"]:
                tok.fail(r["id"], r["reason"])
                summary.failed.append({"id": r["id"], "reason": r["reason"]})
                bar.note(f"[yellow]skipped[/] {r['id']}: {r['reason']}")
            else:
                tok.commit(r["entry"])
                summary.done += 1
            bar.advance(1, 1)


def _reduce(batch: dict, opt: CompressOptions) -> dict:
    """A task: one batch of consecutive videos loaded, reduced with the local engine's seeds and batch
    calls, and each video's arrays, attrs and index fields (pickled), or its failure."""
    s = _SETUPS.get(repr(opt))
    if s is None:
        s = _SETUPS[repr(opt)] = setup(opt)
    rows: list[tuple[str, bytes, str]] = []  # (id, pickled record or b"", failure reason or "")
    for vids in batch["ids"]:
        vids = [str(v) for v in vids]
        loaded = [load_video(s, vid, opt.store) for vid in vids]
        for vid, rec in reduce_videos(s, vids, loaded, opt):
            if isinstance(rec, str):
                rows.append((vid, b"", rec))
                continue
            rec = Record(rec["data"], rec["attrs"], rec["summary"], chunks={}, uncompressed=())
            rows.append((vid, pickle.dumps(rec, protocol=5), ""))
    return {
        name: np.asarray([r[k] for r in rows], dtype=object)
        for k, name in enumerate(("id", "payload", "reason"))
    }


_SETUPS: dict[str, Setup] = {}  # per Ray worker process
