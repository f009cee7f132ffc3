"""Store index at scale: the whole-file index (read whole into a dict, as vtc read it before) against the
bucketed table, on a synthetic index of N videos.

    .venv/bin/python benchmarks/index.py                 # N = 1,000,000
    .venv/bin/python benchmarks/index.py --n 100000 --lookups 200

The index is built through the index code (no zarr arrays): N feature-store entries (95% done with
frames, source and fingerprint, 5% failed with a reason) plus 5% overwrites (failed, then done) are
appended to ``index.jsonl`` in bulk, then one compaction writes the table beside it; both variants read
the same store. Each measure runs in a fresh process per variant, so one variant's memory or page cache
of parsed objects does not help the other (the OS file cache is warm for both):

- open + one lookup: a process opens the store and finds one video (the old index reads every line);
- one lookup, cold: median over ``--lookups`` fresh opens in one process (the new index reads the
  manifest, the log's short tail and one bucket each time);
- what is left of K ids: the ids of a K-video input list that are not done (K = 1,000 and K = N);
- peak memory: the process's peak RSS above what it had before touching the index.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _check(e):
    return None if isinstance(e.get("id"), str) and e.get("status") in ("done", "failed") else "foreign"


def _entry(i: int, rng: random.Random) -> dict:
    vid = f"kinetics/train/{i // 1000:04d}/video_{i:07d}.mp4"
    if rng.random() < 0.05:
        return {
            "id": vid,
            "status": "failed",
            "reason": "decode failed: invalid data found",
            "time": 1.7e9 + i,
        }
    return {
        "id": vid,
        "key": f"video_{i:07d}.mp4-{rng.getrandbits(32):08x}",
        "status": "done",
        "n_frames": 32,
        "source": f"/data/{vid}",
        "fingerprint": {"size": rng.randrange(10**6, 10**8), "mtime_ns": 1_700_000_000_000_000_000 + i},
        "time": 1.7e9 + i,
    }


def build(root: Path, n: int) -> float:
    """Write the log, then compact it into the table; returns the compaction's seconds."""
    import vtc.cache.index as ix
    from vtc.cache.fs import LocalFS

    rng = random.Random(0)
    with open(root / ix.LOG_FILE, "wb") as f:
        for i in range(n):
            f.write(ix._line(_entry(i, rng)))
        for i in rng.sample(range(n), n // 20):  # retried videos: a later line wins
            f.write(ix._line({**_entry(i, rng), "status": "done", "key": f"k{i}", "time": 1.8e9 + i}))
    t0 = time.perf_counter()
    ix.Index(LocalFS(root), _check, log=True).compact()
    return time.perf_counter() - t0


def child(variant: str, measure: str, root: Path, n: int, lookups: int, k: int) -> dict:
    """One measure of one variant, in this (fresh) process."""
    import vtc.cache.index as ix
    from vtc.cache.fs import LocalFS
    from vtc.cache.jsonl import Journal

    rng = random.Random(1)
    ids = [f"kinetics/train/{i // 1000:04d}/video_{i:07d}.mp4" for i in rng.sample(range(n), min(k, n))]
    ids += [f"new/video_{i}.mp4" for i in range(k // 10)]  # inputs the store has never seen
    base = _peak_rss_kib()
    out: dict = {}
    if measure == "open":
        t0 = time.perf_counter()
        if variant == "old":
            e = Journal(root / ix.LOG_FILE, "id", _check).latest().get(ids[0])
        else:
            e = ix.Index(LocalFS(root), _check, log=True).get(ids[0])
        out["s"] = time.perf_counter() - t0
        assert e is not None
    elif measure == "lookup":
        times = []
        for v in ids[:lookups]:
            t0 = time.perf_counter()
            if variant == "old":
                Journal(root / ix.LOG_FILE, "id", _check).latest().get(v)
            else:
                ix.Index(LocalFS(root), _check, log=True).get(v)
            times.append(time.perf_counter() - t0)
        out["s"] = statistics.median(times)
    else:  # todo
        t0 = time.perf_counter()
        if variant == "old":
            done = Journal(root / ix.LOG_FILE, "id", _check).latest()
            todo = [v for v in ids if done.get(v, {}).get("status") != "done"]
        else:
            found = ix.Index(LocalFS(root), _check, log=True).get_many(ids)
            todo = [v for v in ids if found.get(v, {}).get("status") != "done"]
        out["s"] = time.perf_counter() - t0
        out["todo"] = len(todo)
    out["rss_mb"] = (_peak_rss_kib() - base) / 1024
    return out


def _peak_rss_kib() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries the parent's peak into a child across
    fork + exec, and the parent here built the index."""
    try:
        with open("/proc/self/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_child(*args) -> dict:
    r = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True, check=False
    )
    if r.returncode:
        sys.exit(f"child {args} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="videos in the synthetic index")
    ap.add_argument("--lookups", type=int, default=200, help="cold lookups for the new index's median")
    ap.add_argument("--old-lookups", type=int, default=3, help="cold lookups for the old index's median")
    ap.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        variant, measure, root, n, lookups, k = args.child
        print(json.dumps(child(variant, measure, Path(root), int(n), int(lookups), int(k))))
        return

    import vtc.cache.index as ix

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        compact_s = build(root, args.n)
        log_mb = (root / ix.LOG_FILE).stat().st_size / 2**20
        m = json.loads((root / ix.MANIFEST).read_text())
        table_mb = sum(p.stat().st_size for p in (root / "index").rglob("*") if p.is_file()) / 2**20
        print(
            f"{args.n:,} videos (+{args.n // 20:,} overwrites): index.jsonl {log_mb:.0f} MiB; table "
            f"{m['buckets']:,} buckets, {table_mb:.0f} MiB; built in {time.perf_counter() - t0:.1f} s "
            f"(of which compaction {compact_s:.1f} s)"
        )
        rows = []
        n = args.n
        for label, measure, k, lk in [
            ("open + one lookup (fresh process)", "open", 1000, 1),
            ("one lookup, cold (median)", "lookup", 1000, None),
            ("left to do of 1,000 ids (+100 new)", "todo", 1000, 1),
            (f"left to do of {n:,} ids (+{n // 10:,} new)", "todo", n, 1),
        ]:
            res = {}
            for variant in ("old", "new"):
                lookups = lk or (args.old_lookups if variant == "old" else args.lookups)
                res[variant] = run_child(variant, measure, root, n, lookups, k)
            if "todo" in res["old"]:
                assert res["old"]["todo"] == res["new"]["todo"], res  # both answer the same
            rows.append((label, res))
    print(
        f"\n{'measure':<46}{'old s':>9}{'new s':>9}{'old/new':>9}"
        f"{'old peak MiB':>14}{'new peak MiB':>14}{'old/new':>9}"
    )
    for label, r in rows:
        o, w = r["old"], r["new"]
        # a peak under 1 MiB is within the interpreter's own noise: no ratio is printed for it
        mem = f"{o['rss_mb'] / w['rss_mb']:>9.1f}" if w["rss_mb"] >= 1 else f"{'-':>9}"
        print(
            f"{label:<46}{o['s']:>9.4f}{w['s']:>9.4f}{o['s'] / w['s']:>9.0f}"
            f"{o['rss_mb']:>14.1f}{w['rss_mb']:>14.1f}{mem}"
        )
    print(
        "\nold: index.jsonl read whole into a dict (vtc.cache.jsonl.Journal, as Store read it before the "
        "table);\nnew: manifest + the log's tail + one bucket (get), each needed bucket once (get_many). "
        "Peak MiB: the\nprocess's peak RSS (VmHWM) above its RSS before touching the index (0.0: under 0.1 MiB)."
    )


if __name__ == "__main__":
    main()
