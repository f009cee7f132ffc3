"""`vtc report`: the tables hold the inputs' numbers, the plots are drawn, the HTML stands alone and
loads in a browser, and damaged inputs are skipped with a warning.

The evaluations are written by the functions `vtc eval` builds results.json with (summarise, measured),
fed the per-sample records lmms-eval and the model would give: the schema is the real one, without
running a model."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from vtc.cli.app import main
from vtc.stages.evaluate import measured, summarise
from vtc.stages.report import pareto_front, report

TASK_NAMES = {"mcq": ("vtc_mcq_local", "mcq_accuracy"), "videomme": ("videomme", "videomme_perception_score")}
CATEGORIES = ["colour", "count", "order"]


def write_eval(
    d: Path,
    method: dict,
    scores: list[float],
    tokens: list[int],
    ttft: list[float],
    task: str = "mcq",
    adapter: str | None = None,
    online: dict | None = None,
    memory: int = 700 * 2**20,
) -> dict:
    """An evaluation directory as `vtc eval` leaves it; returns the results.json it wrote."""
    task_name, metric = TASK_NAMES[task]
    samples, log = [], []
    for i, (score, n) in enumerate(zip(scores, tokens, strict=True)):
        scored = {"score": score, "category": CATEGORIES[i % len(CATEGORIES)]}
        if task == "videomme":
            scored["duration"] = ["short", "medium", "long"][i % 3]
        samples.append({"doc_id": i, "target": "A", metric: scored})
        log.append(
            {
                "task": task_name,
                "doc_id": i,
                "video": f"vid_{i % 2}",
                "visual_tokens": n,
                "visual_decode": float(n) if online is None else n / 2,
                "ttft_s": ttft[i],
                "decode_s_per_token": 0.004 + 0.0005 * i,
                "n_new_tokens": 2,
                "n_text": 20,
                "seconds": ttft[i] + 0.01,
                "answer": "A",
            }
        )
    accuracy = 100.0 * sum(scores) / len(scores)  # what the tasks' aggregate functions compute
    res = {
        "results": {task_name: {f"{metric},none": accuracy, f"{metric}_stderr,none": "N/A", "alias": task}},
        "samples": {task_name: samples},
    }
    r = summarise(task, task_name, res, log)
    r["measured"] = measured(log, {"kind": "process_peak_rss", "bytes": memory}, 0)
    prefill = 391_000.0 * statistics.fmean(tokens)
    r["flops"] = {
        "mean_per_sample": {"decode": 3.2e5, "module": 1e4, "prefill": prefill, "total": prefill + 3.3e5},
        "unit": "FLOPs",
    }
    r.update(
        {
            "wall_time_s": 1.5,
            "model": "/models/tiny",
            "tokens_store": f"/stores/{method['method']}.zarr",
            "features_store": "/stores/feats.zarr",
            "method": method,
            "method_seed": None,
            "online": online,
            "adapter": (
                {"run": f"/runs/{adapter}", "weights": [1000, 1], "adapters": ["full", "projector"]}
                if adapter
                else None
            ),
            "seed": 0,
            "limit": None,
            "batch_size": 1,
            "device": "cpu",
            "dtype": "fp32",
            "data": "/data/q",
            "versions": {"vtc": "0.1.0"},
            "git": None,
        }
    )
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(r, indent=2, default=str))
    (d / "run.json").write_text(json.dumps({"task": task, "method": method}))
    (d / "answers.jsonl").write_text("")
    return r


def write_training_run(d: Path, losses: list[float], adapters=("full", "projector")) -> None:
    """run.json and log.jsonl as `vtc train` writes them (one line per step, plus an evaluation line)."""
    d.mkdir(parents=True)
    meta = {
        "options": {"steps": len(losses), "batch_size": 8, "lr": 3e-3},
        "method": {"method": "none"},
        "adapters": list(adapters),
        "identity_hash": "0123456789ab",
    }
    (d / "run.json").write_text(json.dumps(meta, indent=2))
    lines = [
        json.dumps({"loss": v, "lr": 1e-3, "samples_per_s": 50.0, "step": i + 1}, sort_keys=True)
        for i, v in enumerate(losses)
    ]
    lines.append(json.dumps({"step": len(losses), "eval": {"accuracy": 62.5, "per_category": {}, "n": 8}}))
    (d / "log.jsonl").write_text("\n".join(lines) + "\n")


def make_runs(root: Path, variant: int = 0) -> dict[str, dict]:
    """Three mcq evaluations, one Video-MME evaluation and a training run under root; {dir: results}."""
    s = 0.1 * variant
    runs = {
        "eval-none": write_eval(
            root / "eval-none", {"method": "none"}, [1, 1, 1, 0, 1, 1], [129] * 6,
            [0.060 + s, 0.055, 0.058, 0.061, 0.057, 0.059], adapter="run-a",
        ),
        "eval-pool": write_eval(
            root / "eval-pool", {"method": "pool", "stride": 4, "mode": "bilinear"}, [1, 0, 1, 0, 1, 0],
            [33] * 6, [0.030, 0.031 + s, 0.029, 0.030, 0.033, 0.032], adapter="run-a",
        ),
        "eval-dyntok": write_eval(
            root / "nested" / "eval-dyntok", {"method": "dyntok", "threshold": 0.6, "marker": True},
            [1, 1, 0, 0, 1, 0 if variant else 1], [70, 65, 90, 71, 68, 66], [0.040, 0.041, 0.045, 0.044, 0.043, 0.042],
            online={"method": "fastv", "k": 2, "ratio": 0.5},
        ),
        "eval-vmme": write_eval(
            root / "eval-vmme", {"method": "none"}, [1, 0, 1], [6273, 6273, 6273], [1.2, 1.1, 1.3],
            task="videomme", memory=3 * 2**30,
        ),
    }  # fmt: skip
    write_training_run(root / "run-a", [6.0 / (1 + i) + 0.1 * variant for i in range(60)])
    return runs


def expected(r: dict) -> dict[str, float]:
    """The report's numbers, computed from results.json independently of the code under test."""
    m = r["measured"]
    out = {
        "accuracy": r["accuracy"],
        "n_samples": r["n_samples"],
        "tokens_mean": r["visual_tokens"]["mean"],
        "tokens_min": r["visual_tokens"]["min"],
        "tokens_max": r["visual_tokens"]["max"],
        "tokdense": r["tokdense"],
        "flops": r["flops"]["mean_per_sample"]["total"],
        "ttft_ms": 1000 * m["ttft_s"]["median"],
        "decode_ms": m["decode_ms_per_token"]["median"],
        "peak_memory_mib": m["peak_memory"]["bytes"] / 2**20,
        "samples_per_s": m["samples_per_s"],
    }
    out.update({f"category:{k}": v for k, v in r.get("per_category", {}).items()})
    out.update({f"duration:{k}": v for k, v in r.get("per_duration", {}).items()})
    out["tokens_decode_mean"] = r["visual_tokens_decode"]["mean"]
    return out


def on_screen(runs: dict[str, dict]) -> set[tuple[str, str]]:
    """(dir, key) of every number the tables show: decode tokens only in a task where online pruning
    made them differ from prefill's (mcq here, through dyntok + fastv)."""
    online = {r["task"] for r in runs.values() if r["online"]}
    return {
        (d, k)
        for d, r in runs.items()
        for k in expected(r)
        if k != "tokens_decode_mean" or r["task"] in online
    }


HEADERS = {
    "accuracy": "accuracy",
    "n": "n_samples",
    "tokens mean": "tokens_mean",
    "tokens min": "tokens_min",
    "tokens max": "tokens_max",
    "decode tokens": "tokens_decode_mean",
    "TokDense": "tokdense",
    "FLOPs": "flops",
    "TTFT ms": "ttft_ms",
    "decode ms/tok": "decode_ms",
    "peak MiB": "peak_memory_mib",
    "samples/s": "samples_per_s",
}
SI = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}


def shown(cell: str) -> tuple[float, float]:
    """A displayed number and half a unit of its last digit: how far from the input it may be."""
    scale = SI.get(cell[-1], 1.0)
    digits = cell.rstrip("kMGTP")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return float(digits) * scale, 0.5 * 10**-decimals * scale * 1.0001


def check_displayed(cell: str, want: float) -> None:
    value, tol = shown(cell)
    assert abs(value - want) <= tol, (cell, want)


def dir_key(path: str) -> str:
    return Path(path).name


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The same report twice over different inputs: (runs, report, out) for variants 0 and 1."""
    out = {}
    for variant in (0, 1):
        root = tmp_path_factory.mktemp(f"runs{variant}")
        runs = make_runs(root, variant)
        dest = tmp_path_factory.mktemp(f"report{variant}")
        out[variant] = (runs, report([root], dest), dest)
    return out


def test_rows_carry_every_number_of_results_json(made):
    runs, rep, _ = made[0]
    assert {dir_key(r.dir) for r in rep.rows} == set(runs)
    for r in rep.rows:
        want = expected(runs[dir_key(r.dir)])
        got = {k: v for k, v in r.values.items() if v is not None}
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-12), k
    labels = {dir_key(r.dir): r.label for r in rep.rows}
    # the parameters that differ from the method's defaults, the online method, the adapter run
    assert labels["eval-pool"] == "pool stride=4 + run-a"
    assert labels["eval-none"] == "none + run-a" and labels["eval-vmme"] == "none"
    assert labels["eval-dyntok"].startswith("dyntok") and "online fastv" in labels["eval-dyntok"]
    assert "threshold" not in labels["eval-dyntok"]  # 0.6 is dyntok's default
    assert [dir_key(t.dir) for t in rep.training] == ["run-a"]
    s = rep.training[0].summary()
    assert s["steps"] == 60 and s["last_eval_accuracy"] == 62.5
    assert s["min_loss"] == pytest.approx(6.0 / 60)
    # a task per table: Video-MME has its durations, mcq its categories, neither the other's
    assert rep.tasks() == ["mcq", "videomme"]
    assert any(c.key == "duration:short" for c in rep.columns["videomme"])
    assert not any(c.key.startswith("duration:") for c in rep.columns["mcq"])


def test_csv_holds_the_inputs_exactly(made):
    runs, _, out = made[0]
    with open(out / "report.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(runs)
    for row in rows:
        want = expected(runs[dir_key(row["dir"])])
        for k, v in want.items():
            assert float(row[k]) == v, k
        assert json.loads(row["method"]) == runs[dir_key(row["dir"])]["method"]
    # a category mcq has and Video-MME lacks is blank there, not 0
    vmme = next(r for r in rows if r["task"] == "videomme")
    assert vmme["duration:short"] != "" and all(r["duration:short"] == "" for r in rows if r["task"] == "mcq")
    train = list(csv.DictReader(open(out / "training.csv", encoding="utf-8")))
    assert train[0]["steps"] == "60"


def test_markdown_shows_the_inputs(made):
    runs, rep, out = made[0]
    text = (out / "report.md").read_text()
    checked = set()
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        task = section.splitlines()[0].strip()
        if task not in ("mcq", "videomme"):
            continue
        table = [ln for ln in section.splitlines() if ln.startswith("|")]
        header = [h.strip() for h in table[0].strip("|").split("|")]
        by_label = {r.label: r for r in rep.rows_of(task)}
        for line in table[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            row = by_label[cells[0]]
            want = expected(runs[dir_key(row.dir)])
            for h, cell in zip(header[2:], cells[2:], strict=True):
                key = HEADERS.get(h) or next(k for k in want if k.split(":")[-1] == h)
                if key in want:
                    check_displayed(cell, want[key])
                    checked.add((dir_key(row.dir), key))
                else:
                    assert cell == "", (h, cell)
    assert checked == on_screen(runs)
    assert "![accuracy vs visual tokens per sample](pareto_tokens.png)" in text


def test_cli_json_is_the_only_stdout_and_matches(made, tmp_path, capsys):
    runs, rep, _ = made[0]
    root = Path(next(r.dir for r in rep.rows if dir_key(r.dir) == "eval-none")).parent
    main(["report", str(root), "--out", str(tmp_path / "r"), "--format", "json"])
    doc = json.loads(capsys.readouterr().out)  # the whole of stdout is the document
    assert sorted(Path(p).name for p in doc["paths"]) == sorted(p.name for p in (tmp_path / "r").iterdir())
    for row in doc["rows"]:
        want = expected(runs[dir_key(row["dir"])])
        for k, v in want.items():
            assert row["values"][k] == v, k
    assert doc["training"][0]["steps"] == 60 and doc["skipped"] == []


def test_plots_are_drawn_at_their_size_and_follow_the_inputs(made):
    from PIL import Image

    (_, rep0, out0), (_, _, out1) = made[0], made[1]
    for name in ["pareto_tokens", "pareto_flops", "pareto_ttft", "loss"]:
        assert {str(out0 / f"{name}.png"), str(out0 / f"{name}.svg")} <= set(rep0.paths)
        for out in (out0, out1):
            svg = (out / f"{name}.svg").read_text()
            assert "<svg" in svg and "</svg>" in svg
        with Image.open(out0 / f"{name}.png") as a, Image.open(out1 / f"{name}.png") as b:
            # one panel is 960 x 600; the Pareto plots have a panel per task (mcq and videomme)
            assert a.size == ((1920, 600) if name.startswith("pareto") else (960, 600)), name
            assert a.size == b.size and a.tobytes() != b.tobytes(), f"{name} ignores its inputs"
            extrema = a.convert("L").getextrema()
            assert extrema[0] < 100 and extrema[1] > 200, f"{name} is blank"


def test_pareto_front():
    pts = [(33, 55.0), (33, 59.0), (70, 53.0), (69, 58.0), (129, 74.0), (129, 0.0)]
    assert pareto_front(pts) == [(33, 59.0), (129, 74.0)]
    assert pareto_front([(1, 1.0)]) == [(1, 1.0)]


def test_html_references_only_what_it_embeds(made):
    _, _, out = made[0]
    page = (out / "report.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page) + re.findall(r"url\(([^)]*)\)", page)
    assert refs, "no images embedded"
    for ref in refs:
        assert ref.startswith("data:") or (out / ref).is_file() and "/" not in ref, ref
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("<img") == 4  # three Pareto plots and the loss curves


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if found := shutil.which(name):
            return found
    return None


# Runs on load: every image decoded, every number cell's value and text, and any error, into the DOM.
_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || (e.target && e.target.src) || e)), true);
const _error = console.error;
console.error = (...a) => { window.__errors.push(a.join(" ")); _error(...a); };
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth}));
  const cells = [...document.querySelectorAll("td[data-key]")].map(td => ({
    dir: td.closest("tr").dataset.dir, key: td.dataset.key, value: td.dataset.value, text: td.textContent}));
  const pre = document.createElement("pre");
  pre.id = "vtc-probe";
  pre.textContent = JSON.stringify({images, cells, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""


def test_html_in_a_headless_browser(made, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not found on PATH (scripts/setup.sh installs it with apt-get where it can)")
    runs, _, out = made[0]
    page = (out / "report.html").read_text()
    probe = out / "report.probe.html"  # beside the report, so a relative reference would resolve as its does
    probe.write_text(page.replace("<head>", "<head>" + _PROBE, 1))
    try:
        r = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        probe.unlink()
    found = re.search(r'<pre id="vtc-probe">(.*?)</pre>', r.stdout, re.S)
    assert found, f"no probe result (rc {r.returncode}): {r.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["errors"] == []
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console
    assert len(result["images"]) == 4 and all(i["ok"] and i["w"] > 0 for i in result["images"])
    checked = set()
    for c in result["cells"]:
        want = expected(runs[dir_key(c["dir"])])
        if c["key"] in want:
            assert float(c["value"]) == want[c["key"]], c
            check_displayed(c["text"], want[c["key"]])
            checked.add((dir_key(c["dir"]), c["key"]))
        else:
            assert c["value"] == "" and c["text"] == "", c
    assert checked == on_screen(runs)


def test_damaged_results_are_skipped_with_one_warning_each(tmp_path, capsys):
    root = tmp_path / "runs"
    good = write_eval(root / "good", {"method": "none"}, [1, 0], [129, 129], [0.05, 0.06])
    bad = {
        "torn": '{"task": "mcq", "accuracy": 5',
        "empty": "",
        "foreign": json.dumps({"results": {"videomme": {"acc,none": 0.5}}, "config": {}}),
        "a-list": "[1, 2]",
        "no-tokens": json.dumps({"task": "mcq", "accuracy": 50.0, "method": {"method": "none"}}),
    }
    for name, text in bad.items():
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(text)
    (root / "binary").mkdir()
    (root / "binary" / "results.json").write_bytes(b"\xff\xfe\x00garbage")
    # an evaluation still running: its journal and run.json, no results.json yet
    (root / "running").mkdir()
    (root / "running" / "run.json").write_text("{}")
    (root / "running" / "answers.jsonl").write_text("")
    main(["report", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    for name in (*bad, "binary"):
        assert sum(str(root / name / "results.json") in ln for ln in lines) == 1, name
    assert any("running" in ln for ln in lines)
    assert all(ln.startswith("warning: ") for ln in lines) and len(lines) == len(bad) + 2
    rows = list(csv.DictReader(open(tmp_path / "out" / "report.csv", encoding="utf-8")))
    assert len(rows) == 1 and float(rows[0]["accuracy"]) == good["accuracy"]


def test_no_runs_is_one_line_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    r = subprocess.run(
        [sys.executable, "-m", "vtc", "report", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: no evaluation") and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()


def test_missing_path_and_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    main(["report", "--help"])
    help_text = capsys.readouterr().out
    assert "Examples" in help_text and "vtc report" in help_text and "--format" in help_text


def test_a_rerun_without_training_drops_the_old_loss_plot(tmp_path):
    root = tmp_path / "runs"
    write_eval(root / "a", {"method": "none"}, [1, 0], [129, 129], [0.05, 0.06])
    write_training_run(root / "run-x", [1.0, 0.5, 0.25])
    out = tmp_path / "out"
    assert (out / "loss.png") in [Path(p) for p in report([root], out).paths]
    rep = report([root / "a"], out)
    assert not (out / "loss.png").exists() and not (out / "training.csv").exists()
    assert len(rep.rows) == 1 and rep.training == []
