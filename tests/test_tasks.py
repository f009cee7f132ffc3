"""Local benchmark copies: every task runs end to end through lmms-eval, scores hand-made answers
right, and `prepare` turns a fake raw download into a copy that passes the row checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.videos import make_video
from vtc.errors import VtcError
from vtc.eval.tasks import LOCAL_TASKS, category_breakdown, check_rows, videomme_row, write_jsonl
from vtc.stages.prepare import prepare

# Store ids in conftest's feature_store: "vid_a" (4 frames) and "vid_b" (3 frames).
_OPTS4 = ["A. red", "B. green", "C. blue", "D. black"]

_SRT = (
    "1\n00:00:00,000 --> 00:00:02,000\n"
    '<font color="white" size=".72c">the opening line</font>\n\n'
    "2\n00:05:00,000 --> 00:05:20,000\n"
    '<font color="white" size=".72c">a line after the video ends</font>\n\n'
)


def _rows(task: str) -> list[dict]:
    """Three questions in ``task``'s local format; in each, the right option is B (index 1)."""
    if task in ("videomme", "videomme_w_subtitle"):
        extra = {"fps": 1.0, "total_frames": 100} if task == "videomme_w_subtitle" else {}
        return [
            videomme_row(v, f"00{i}-1", d, "Which colour?", _OPTS4, "B", **extra)
            for i, (v, d) in enumerate([("vid_a", "short"), ("vid_b", "long"), ("vid_a", "short")])
        ]
    if task == "mvbench":
        subs = ["action_antonym", "object_existence", "action_antonym"]
        return [
            {
                "video": f"{v}.mp4",
                "question": "What happens?",
                "candidates": ["sits", "runs", "jumps"],
                "answer": "runs",
                "sub_task": s,
            }
            for v, s in zip(["vid_a", "vid_b", "vid_a"], subs, strict=True)
        ]
    if task == "nextqa":
        opts = {f"a{i}": w for i, w in enumerate(["cat", "dog", "cow", "pig", "hen"])}
        return [
            {"video": v, "question": "Which animal?", **opts, "answer": 1, "type": t, "qid": i}
            for i, (v, t) in enumerate([("vid_a", "CW"), ("vid_b", "TN"), ("vid_b", "CW")])
        ]
    if task == "longvideobench":
        return [
            {
                "id": f"q{i}",
                "video_path": f"{v}.mp4",
                "question": "What is on the table?",
                "option0": "a cup",
                "option1": "a phone",
                "option2": "a book",
                "option3": "a key",
                "option4": "N/A",
                "correct_choice": 1,
                "duration_group": 15,
                "question_category": c,
            }
            for i, (v, c) in enumerate([("vid_a", "S2E"), ("vid_b", "T3O"), ("vid_a", "S2E")])
        ]
    if task == "mlvu":
        q = "How many people are there?\n(A) one\n(B) two\n(C) three\n(D) four"
        return [
            {
                "video_name": f"{v}.mp4",
                "question": q,
                "candidates": ["one", "two", "three", "four"],
                "answer": "B",
                "task_type": t,
                "question_id": str(i),
            }
            for i, (v, t) in enumerate([("vid_a", "count"), ("vid_b", "ego"), ("vid_a", "count")])
        ]
    if task == "perceptiontest":
        return [
            {
                "video_name": v,
                "question_id": f"q{i}",
                "question": "Where is the ball?",
                "options": ["left cup", "middle cup", "right cup"],
                "answer_id": 1,
                "area": a,
                "reasoning": "descriptive",
                "tag": ["object tracking"],
            }
            for i, (v, a) in enumerate([("vid_a", "memory"), ("vid_b", "physics"), ("vid_b", "memory")])
        ]
    if task == "egoschema":
        opts = ["A. cooks", "B. cleans", "C. reads", "D. sleeps", "E. drives"]
        return [
            {
                "question_idx": f"q{i}",
                "video_idx": v,
                "question": "What does C do?",
                "option": opts,
                "answer": "1",
            }
            for i, v in enumerate(["vid_a", "vid_b", "vid_a"])
        ]
    if task == "mcq":
        return [
            {
                "video": v,
                "question": "What is shown?",
                "options": ["sky", "sea", "sand"],
                "answer": "B",
                "category": c,
            }
            for v, c in [("vid_a", "scene"), ("vid_b", "scene"), ("vid_b", "object")]
        ]
    raise AssertionError(task)


def _stage(task: str, root) -> object:
    d = root / task
    write_jsonl(d / "questions.jsonl", _rows(task))
    if task == "videomme_w_subtitle":
        (d / "subtitles").mkdir()
        (d / "subtitles" / "vid_a.srt").write_text(_SRT)
    return d


def _module(task: str):
    return __import__(f"vtc.eval.tasks.{LOCAL_TASKS[task].module}", fromlist=["_"])


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return {t: _stage(t, root) for t in LOCAL_TASKS}


@pytest.fixture
def answers_b_b_d(monkeypatch):
    """The tiny random model answers nothing useful, so after it has run (tokens and all), its answers
    are replaced: questions 0 and 1 get "B" (right in every fixture), question 2 gets "D" (wrong)."""
    from vtc.eval.lmms_model import VtcModel

    real = VtcModel.generate_until

    def generate_until(self, requests):
        real(self, requests)
        # lmms-eval's generate_until args: (context, gen_kwargs, doc_to_visual, doc_id, task, split)
        return ["D" if r.args[3] == 2 else "B" for r in requests]

    monkeypatch.setattr(VtcModel, "generate_until", generate_until)


@pytest.mark.parametrize("task", list(LOCAL_TASKS))
def test_task_runs_end_to_end(task, staged, tiny_ckpt, feature_store, answers_b_b_d, tmp_path):
    from vtc.stages.evaluate import EvalOptions, evaluate

    r = evaluate(
        EvalOptions(task, feature_store, str(tiny_ckpt["llava_ov"]), data=staged[task], out=tmp_path / "out"),
        quiet=True,
    )
    assert r["n_samples"] == 3 and len(r["samples"]) == 3
    assert r["metric"] == LOCAL_TASKS[task].metric
    # every question reached the model with the tokens of its own video (4 or 3 frames of 196 + 1)
    tokens = {"vid_a": 4 * 196 + 1, "vid_b": 3 * 196 + 1}
    assert all(s["visual_tokens"] == tokens[s["video"]] for s in r["samples"])
    assert {s["video"] for s in r["samples"]} == {"vid_a", "vid_b"}
    # lmms-eval scored "B", "B", "D" through the task's target, parsing and aggregation
    assert {s["doc_id"]: s["score"] for s in r["samples"]} == {0: 1.0, 1: 1.0, 2: 0.0}
    # vtc reports a percentage for every task; lmms-eval's own value (some tasks: a fraction) is kept
    percent = r["accuracy"]
    assert r["metrics"][r["metric"]] * LOCAL_TASKS[task].scale == pytest.approx(percent)
    # MLVU averages over task types: count (questions 0, 2) 50 %, ego (question 1) 100 %
    assert percent == pytest.approx(75.0 if task == "mlvu" else 200 / 3, abs=1e-3)  # LVB rounds to 1e-5


@pytest.mark.parametrize("task", list(LOCAL_TASKS))
def test_scoring_right_and_wrong_letter(task):
    """The task's process_results gives 1 for the right letter and 0 for a wrong one; the aggregate
    of one right and one wrong answer is 50 % (in the task's scale); categories come along."""
    m = _module(task)
    doc = _rows(task)[0]
    right, wrong = "B", "D"
    metric = LOCAL_TASKS[task].metric
    good = getattr(m, f"{task}_process_results")(doc, [right])[metric]
    bad = getattr(m, f"{task}_process_results")(doc, [wrong])[metric]
    assert good["score"] == 1.0 and bad["score"] == 0.0
    agg = getattr(m, f"{task}_aggregate_results")
    value = agg([good, bad], args=None) if "args" in agg.__code__.co_varnames else agg([good, bad])
    assert value * LOCAL_TASKS[task].scale == pytest.approx(50.0)
    col = LOCAL_TASKS[task].category
    assert good.get("category") == (doc[col] if col else None)


def test_category_breakdown_from_samples():
    m = _module("mvbench")
    rows = _rows("mvbench")
    samples = [
        {"mvbench_accuracy": m.mvbench_process_results(d, [a])["mvbench_accuracy"]}
        for d, a in zip(rows, ["B", "A", "A"], strict=True)
    ]
    assert category_breakdown("mvbench", samples) == {"action_antonym": 50.0, "object_existence": 0.0}
    assert category_breakdown("egoschema", [{"score": {"score": 1.0}}]) == {}


def test_mcq_letter_rule():
    from vtc.eval.tasks.mcq import mcq_doc_to_text, mcq_parse

    assert [mcq_parse(a, 3) for a in ["B", "(B)", "B. sea", "The answer is C.", "Bottle", "D", ""]] == [
        "B",
        "B",
        "B",
        "C",
        "",
        "",
        "",
    ]
    text = mcq_doc_to_text(_rows("mcq")[0], LOCAL_TASKS["mcq"].kwargs)
    assert (
        text
        == "What is shown?\nA. sky\nB. sea\nC. sand\nAnswer with the option's letter from the given choices directly."
    )


def test_prompts_are_lmms_evals():
    """Prompts of tasks whose lmms-eval utils cannot be imported as a whole match lmms-eval's format."""
    from vtc.eval.tasks.nextqa import nextqa_doc_to_text

    assert (
        nextqa_doc_to_text(_rows("nextqa")[0], {}) == "Which animal?\nA. cat\nB. dog\nC. cow\nD. pig\nE. hen"
    )
    from vtc.eval.tasks.mvbench import mvbench_doc_to_text, mvbench_doc_to_visual

    doc = _rows("mvbench")[0]
    assert mvbench_doc_to_text(doc, LOCAL_TASKS["mvbench"].kwargs).startswith(
        "Question:What happens?\nOption:\n(A) sits\n"
    )
    assert mvbench_doc_to_visual(doc) == ["ssv2_video_mp4/vid_a"]


def test_subtitles_of_the_sampled_frames(tmp_path):
    """lmms-eval's rule: only subtitles spanning one of 32 uniformly sampled frames are shown."""
    from vtc.eval.tasks.videomme import videomme_w_subtitle_doc_to_text

    (tmp_path / "vid_a.srt").write_text(_SRT)
    doc = _rows("videomme_w_subtitle")[0]
    kwargs = {**LOCAL_TASKS["videomme_w_subtitle"].kwargs, "subtitle_dir": str(tmp_path)}
    text = videomme_w_subtitle_doc_to_text(doc, kwargs)
    assert text.startswith(
        "This video's subtitles are listed below: \nthe opening line\nSelect the best answer"
    )
    assert "after the video ends" not in text and text.endswith("D. black\nThe best answer is:")
    # a video 400 s long samples frames past 300 s too: now both lines are shown
    assert "after the video ends" in videomme_w_subtitle_doc_to_text({**doc, "total_frames": 400}, kwargs)
    no_srt = videomme_w_subtitle_doc_to_text({**doc, "videoID": "vid_b"}, kwargs)
    assert "No subtitles available" in no_srt


def test_check_rows_errors(tmp_path):
    bad = write_jsonl(tmp_path / "a" / "q.jsonl", [_rows("mvbench")[0], {"video": "x.mp4", "question": "?"}])
    with pytest.raises(
        VtcError, match=r"q\.jsonl:2: missing candidates, answer, sub_task \(mvbench format\)"
    ):
        check_rows("mvbench", bad)
    wrong = write_jsonl(tmp_path / "b" / "q.jsonl", [{**_rows("nextqa")[0], "answer": 7}])
    with pytest.raises(VtcError, match=r"q\.jsonl:1: answer must be an option index 0-4"):
        check_rows("nextqa", wrong)
    srt_no_fps = _stage("videomme_w_subtitle", tmp_path)
    rows = [
        {k: v for k, v in r.items() if k not in ("fps", "total_frames")} for r in _rows("videomme_w_subtitle")
    ]
    write_jsonl(srt_no_fps / "questions.jsonl", rows)
    with pytest.raises(VtcError, match=r":1: has a subtitle file but no fps/total_frames"):
        check_rows("videomme_w_subtitle", srt_no_fps / "questions.jsonl")
    with pytest.raises(
        VtcError,
        match=r"no local format for task 'vmme'; local tasks: videomme, videomme_w_subtitle, mvbench",
    ):
        prepare("vmme", tmp_path, tmp_path / "out")


# --- prepare: fake raw downloads in each dataset repo's layout -------------------------------------


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _raw(task: str, src):
    """A raw copy of ``task`` in its dataset repo's layout -> the ids its manifest must list."""
    if task == "videomme":
        _write_parquet(src / "videomme" / "test-00000-of-00001.parquet", _rows("videomme"))
        (src / "data").mkdir()
        make_video(src / "data" / "vid_a.mp4", n_frames=16, fps=8.0)
        (src / "subtitle").mkdir()
        (src / "subtitle" / "vid_a.srt").write_text(_SRT)
        (src / "subtitle" / "vid_b.srt").write_text(_SRT)  # vid_b's video is not downloaded
        return {"vid_a"}
    if task == "mvbench":
        (src / "json").mkdir(parents=True)
        for sub in ("action_antonym", "object_existence"):
            rows = [
                {k: v for k, v in r.items() if k != "sub_task"}
                for r in _rows("mvbench")
                if r["sub_task"] == sub
            ]
            (src / "json" / f"{sub}.json").write_text(json.dumps(rows))
        _touch(src / "video" / "ssv2_video_mp4" / "vid_a.mp4")
        _touch(src / "video" / "clevrer" / "video_validation" / "vid_b.mp4")
        return {"ssv2_video_mp4/vid_a", "clevrer/video_validation/vid_b"}
    if task == "nextqa":
        rows = _rows("nextqa")
        with open(src / "test.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        _touch(src / "NExTVideo" / "1001" / "vid_a.mp4")
        _touch(src / "NExTVideo" / "1002" / "vid_b.mp4")
        return {"vid_a", "vid_b"}
    if task == "longvideobench":
        (src / "lvb_val.json").write_text(json.dumps(_rows("longvideobench")))
        _touch(src / "videos" / "vid_a.mp4")
        _touch(src / "videos" / "vid_b.mp4")
        return {"vid_a", "vid_b"}
    if task == "mlvu":  # MLVU's own json: the answer is the candidate's text, options not in the question
        raw = [
            {
                "video": "vid_a.mp4",
                "duration": 30,
                "question": "How many?",
                "candidates": ["1", "2"],
                "answer": "2",
                "question_type": "count",
            }
        ]
        (src / "json").mkdir()
        (src / "json" / "4_count.json").write_text(json.dumps(raw))
        _touch(src / "video" / "4_count" / "vid_a.mp4")
        return {"vid_a"}
    if task == "perceptiontest":
        _write_parquet(src / "mc_question_val" / "validation-00000-of-00001.parquet", _rows("perceptiontest"))
        _touch(src / "videos" / "vid_a.mp4")
        _touch(src / "videos" / "vid_b.mp4")
        return {"vid_a", "vid_b"}
    if task == "egoschema":  # EgoSchema's github layout: questions.json + subset_answers.json
        qs = [
            {
                "q_uid": "vid_a",
                "question": "What does C do?",
                **{f"option {i}": w for i, w in enumerate("abcde")},
            },
            {
                "q_uid": "vid_x",
                "question": "No public answer",
                **{f"option {i}": w for i, w in enumerate("abcde")},
            },
        ]
        (src / "questions.json").write_text(json.dumps(qs))
        (src / "subset_answers.json").write_text(json.dumps({"vid_a": 3}))
        _touch(src / "videos" / "vid_a.mp4")
        return {"vid_a"}
    if task == "mcq":
        write_jsonl(src / "my.jsonl", _rows("mcq"))
        _touch(src / "clips" / "vid_a.webm")
        return {"vid_a"}
    raise AssertionError(task)


@pytest.mark.parametrize("task", [t for t in LOCAL_TASKS if t != "videomme_w_subtitle"])
def test_prepare_converts_raw_copy(task, tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    ids = _raw(task, src)
    out = prepare(task, src, tmp_path / "local")
    files = sorted(p.name for p in out.iterdir())
    expected = sorted(
        [f"{task}.jsonl", "videos.csv", "prepare.json"] + (["subtitles"] if task == "videomme" else [])
    )
    assert files == expected
    n = check_rows(task, out / f"{task}.jsonl")
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["questions"] == n and summary["videos"] == len(ids)
    with open(out / "videos.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert {r["video_id"] for r in manifest} == ids
    assert all((src / r["path"]).exists() for r in manifest)
    if task == "videomme":
        # vid_a (found) gets cv2's fps/frame count and its subtitles; vid_b (missing) neither
        rows = [json.loads(line) for line in (out / "videomme.jsonl").read_text().splitlines()]
        assert {(r["videoID"], r.get("fps"), r.get("total_frames")) for r in rows} == {
            ("vid_a", 8.0, 16),
            ("vid_b", None, None),
        }
        assert sorted(p.name for p in (out / "subtitles").iterdir()) == ["vid_a.srt"]
        assert check_rows("videomme_w_subtitle", out / "videomme.jsonl") == 3
        assert summary["videos_missing"] == 1 and summary["missing_examples"] == ["vid_b"]
    if task == "mlvu":
        row = json.loads((out / "mlvu.jsonl").read_text())
        assert (
            row["answer"] == "B"
            and row["question"] == "How many?\n(A) 1\n(B) 2"
            and row["task_type"] == "count"
        )
    if task == "egoschema":
        row = json.loads((out / "egoschema.jsonl").read_text())  # only the question with an answer
        assert row["answer"] == "3" and row["option"][3] == "D. d"


def test_prepare_reports_unknown_layout(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(
        VtcError, match="no longvideobench questions found under .* \\(expected: lvb_val.json"
    ):
        prepare("longvideobench", tmp_path / "raw", tmp_path / "out")


def test_cli_prepare(tmp_path, capsys):
    import vtc.cli.prepare  # noqa: F401 - registers `prepare` (the lead adds it to app._register)
    from vtc.cli.app import main

    src = tmp_path / "raw"
    src.mkdir()
    _raw("mcq", src)
    main(
        ["prepare", "mcq", "--from", str(src), "--out", str(tmp_path / "local"), "--json"]
    )  # returns: exit 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["questions"] == 3 and summary["videos"] == 1 and summary["videos_missing"] == 1
    with pytest.raises(SystemExit) as e:
        main(["prepare", "nope", "--from", str(src), "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert (
        "no local format for task 'nope'; local tasks: videomme" in err and len(err.strip().splitlines()) == 1
    )


def test_each_benchmark_is_one_registered_spec():
    """Every local format is a TaskSpec registered by its own file, whose lmms-eval functions exist."""
    from vtc.eval.tasks.base import TaskSpec

    for name, spec in LOCAL_TASKS.items():
        assert isinstance(spec, TaskSpec) and spec.name == name
        assert (Path(__file__).parents[1] / "vtc" / "eval" / "tasks" / f"{spec.module}.py").is_file()
        module = spec.functions
        for fn in ("doc_to_visual", "doc_to_text", "process_results", "aggregate_results"):
            assert callable(getattr(module, f"{name}_{fn}")), (name, fn)


def test_task_specs_load_without_lmms_eval():
    """Listing and checking tasks (vtc prepare's checks, the CLI) does not pay for importing lmms-eval."""
    import subprocess
    import sys

    code = "import sys, vtc.eval.tasks as t; t.task_spec('mvbench'); print('lmms_eval' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
