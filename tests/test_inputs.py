"""Input resolution: files, directories, globs, manifests -> stable unique ids."""

import json

import pytest

from vtc.errors import VtcError
from vtc.stages.inputs import resolve_inputs


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_directory_recursive_sorted_and_stem_ids(tmp_path):
    _touch(tmp_path / "v" / "b.mp4")
    _touch(tmp_path / "v" / "sub" / "a.mkv")
    _touch(tmp_path / "v" / "notes.txt")
    got = resolve_inputs([str(tmp_path / "v")])
    # sorted by path: v/b.mp4 < v/sub/a.mkv; notes.txt is not a video
    assert [i for i, _ in got] == ["b", "a"]


def test_clashing_stems_get_relative_path_ids(tmp_path):
    _touch(tmp_path / "x" / "clip.mp4")
    _touch(tmp_path / "y" / "clip.mp4")
    got = dict(resolve_inputs([str(tmp_path / "x"), str(tmp_path / "y")]))
    assert set(got) == {"x/clip", "y/clip"}


def test_glob_and_duplicates_collapse(tmp_path):
    _touch(tmp_path / "a.mp4")
    got = resolve_inputs([str(tmp_path / "*.mp4"), str(tmp_path / "a.mp4")])
    assert got == [("a", str(tmp_path / "a.mp4"))]
    with pytest.raises(VtcError, match="no file matches"):
        resolve_inputs([str(tmp_path / "*.avi")])


def test_manifests_csv_and_jsonl(tmp_path):
    _touch(tmp_path / "m" / "one.mp4")
    (tmp_path / "m" / "list.csv").write_text("video_id,path\nV1,one.mp4\n")
    assert resolve_inputs([str(tmp_path / "m" / "list.csv")]) == [("V1", str(tmp_path / "m" / "one.mp4"))]
    (tmp_path / "m" / "list.jsonl").write_text(json.dumps({"video_id": "V2", "path": "one.mp4"}) + "\n")
    assert resolve_inputs([str(tmp_path / "m" / "list.jsonl")])[0][0] == "V2"
    (tmp_path / "m" / "bad.csv").write_text("video_id\nV1\n")
    with pytest.raises(VtcError, match="no 'path'"):
        resolve_inputs([str(tmp_path / "m" / "bad.csv")])


def test_missing_path_is_kept_for_the_failure_record(tmp_path):
    assert resolve_inputs([str(tmp_path / "gone.mp4")]) == [("gone", str(tmp_path / "gone.mp4"))]


def test_same_id_twice_is_an_error(tmp_path):
    _touch(tmp_path / "a.mp4")
    _touch(tmp_path / "b.mp4")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"video_id": "X", "path": "a.mp4"})
        + "\n"
        + json.dumps({"video_id": "X", "path": "b.mp4"})
        + "\n"
    )
    with pytest.raises(VtcError, match="video id 'X' is given to both"):
        resolve_inputs([str(tmp_path / "m.jsonl")])
