"""`vtc viz`: plans drawn over the frames re-read from the source video, grey without it, one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vtc.stages import viz as V

VID = "clip"
TILE = 160
SRC_W, SRC_H = 160, 120  # synth_video's default size


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_ckpt):
    """A 12-frame video, 6 frames extracted with the tiny LLaVA-OV tower, and three token stores."""
    from vtc.stages.compress import CompressOptions, compress
    from vtc.stages.demo import synth_video
    from vtc.stages.extract import ExtractOptions, extract

    d = tmp_path_factory.mktemp("viz")
    (d / "videos").mkdir()
    synth_video(d / "videos" / f"{VID}.mp4", n_frames=12, seed=3)
    feats = d / "feats.zarr"
    s = extract(
        ExtractOptions([str(d / "videos")], feats, model=str(tiny_ckpt["llava_ov"]), frames=6), quiet=True
    )
    assert s.done == 1
    tok = {}
    for method, params in (("dyntok", {}), ("dycoke", {}), ("vqtoken", {"k": "8"})):
        tok[method] = d / f"tokens-{method}.zarr"
        compress(CompressOptions(feats, method, params, out=tok[method]), quiet=True)
    return {"dir": d, "video": d / "videos" / f"{VID}.mp4", "feats": feats, **tok}


def expected_size(n_cols: int, n_rows: int, tile_h: int) -> tuple[int, int]:
    """The layout the module documents."""
    width = max(V.MIN_WIDTH, V.PAD + n_cols * (TILE + V.PAD))
    return width, V.HEAD_H + V.COL_H + n_rows * (V.LABEL_H + tile_h + V.STRIP_H + V.PAD)


def tile_of(png, row: int, col: int, tile_h: int) -> np.ndarray:
    """uint8 [tile_h, TILE, 3]: the drawn frame at (store row, frame column) of a written PNG."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"))
    y0 = V.HEAD_H + V.COL_H + row * (V.LABEL_H + tile_h + V.STRIP_H + V.PAD) + V.LABEL_H
    x0 = V.PAD + col * (TILE + V.PAD)
    return img[y0 : y0 + tile_h, x0 : x0 + TILE]


def run_cli(args, capsys) -> tuple[int, str, str]:
    from vtc.cli.app import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rows_columns_size_and_frames_from_the_source(work, tmp_path):
    from PIL import Image

    from vtc.cache import Store
    from vtc.video import SamplingPolicy, decode_video

    out = tmp_path / "three.png"
    r = V.viz(VID, [work["dyntok"], work["dycoke"], work["vqtoken"]], out, max_frames=4, tile=TILE)
    tile_h = round(TILE * SRC_H / SRC_W)
    assert out.is_file() and Image.open(out).size == expected_size(4, 3, tile_h) == r.size
    assert r.source_found and r.source == str(work["video"].resolve()) and not r.notes
    assert r.frames == [0, 2, 3, 5]  # 4 of 6 frames, evenly picked
    stored, _ = Store.open(work["feats"]).load(VID, ("frame_indices",))
    assert r.frame_indices == stored["frame_indices"][r.frames].tolist() == [0, 4, 6, 11]
    for label, method in zip(r.labels, ("dyntok", "dycoke", "vqtoken"), strict=True):
        n = Store.open(work[method]).done()[VID]["n_llm_tokens"]
        assert label.startswith(method) and label.endswith(f"· {n} tokens")
    assert "k=8" in r.labels[2]

    # DyCoke keeps the first frame of a window whole: every cell of frame 0 is its own token, so the tile
    # is the source frame itself (grid lines aside); a pruned cell of a later frame is not
    arrays, attrs = Store.open(work["dycoke"]).load(VID)
    T, Hb, Wb = attrs["base_grid"]
    src, sizes = arrays["src"], np.diff(arrays["indptr"])
    assert np.isin(np.arange(Hb * Wb), src).all() and (sizes[arrays["kind"] == 0] == 1).all()
    frame = decode_video(work["video"], SamplingPolicy(frames=6), backend="pyav", size=(TILE, tile_h)).frames
    ch, cw = (np.arange(tile_h) * Hb) // tile_h, (np.arange(TILE) * Wb) // TILE
    inner = ((ch[1:] == ch[:-1])[:, None] & (cw[1:] == cw[:-1])[None, :])[:-1, :-1]  # off the grid lines
    drawn = tile_of(out, 1, 0, tile_h)[:-2, :-2].astype(int)
    assert np.abs(drawn - frame[0][:-2, :-2].astype(int))[inner].mean() < 3
    t = r.frames[2]
    pruned = ~np.isin(t * Hb * Wb + ch[:, None] * Wb + cw[None, :], src)  # frame t's cells not kept
    assert pruned.any()
    diff = np.abs(tile_of(out, 1, 2, tile_h).astype(int) - frame[t].astype(int)).mean(-1)
    assert diff[pruned].mean() > 10


def test_methods_draw_differently(work, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    ra = V.viz(VID, [work["dyntok"]], a, max_frames=3, tile=TILE)
    rb = V.viz(VID, [work["vqtoken"]], b, max_frames=3, tile=TILE)
    assert ra.size == rb.size == expected_size(3, 1, round(TILE * SRC_H / SRC_W))
    tile_h = round(TILE * SRC_H / SRC_W)
    for col in range(3):  # the drawn frames differ, not only the labels
        assert (tile_of(a, 0, col, tile_h) != tile_of(b, 0, col, tile_h)).any()
    # the same input gives the same bytes
    c = tmp_path / "c.png"
    V.viz(VID, [work["dyntok"]], c, max_frames=3, tile=TILE)
    assert c.read_bytes() == a.read_bytes()


def test_cell_looks_follow_the_plan(work):
    """Each plan's cells, counted per look, against the plan's rows read directly."""
    from vtc.cache import Store

    for method in ("dyntok", "dycoke", "vqtoken"):
        st = Store.open(work[method], kind="tokens")
        arrays, attrs = st.load(VID)
        plan = V._load_plan(st, VID)
        T, Hb, Wb = attrs["base_grid"]
        assert plan.base_grid == (T, Hb, Wb) and plan.cell.shape == (T * Hb * Wb,)
        ip, src = arrays["indptr"], arrays["src"]
        assert np.unique(src).size == src.size  # these three partition the cells they keep
        rows = [src[ip[n] : ip[n + 1]] for n in range(len(ip) - 1) if ip[n + 1] > ip[n]]
        spans = [np.unique(g // (Hb * Wb)).size for g in rows]
        looks = np.bincount(plan.cell, minlength=5)
        assert looks[V.PRUNED] == T * Hb * Wb - src.size
        assert looks[V.OWN] == sum(len(g) == 1 for g in rows)
        assert looks[V.REPRESENTATIVE] == sum(len(g) > 1 and s == 1 for g, s in zip(rows, spans, strict=True))
        assert looks[V.REPRESENTATIVE] + looks[V.MEMBER] == sum(
            len(g) for g, s in zip(rows, spans, strict=True) if len(g) > 1 and s == 1
        )
        assert looks[V.CLUSTER] == sum(len(g) for g, s in zip(rows, spans, strict=True) if s > 1)
        # the strips count, in all, the visual tokens plus the markers
        assert plan.per_frame.sum() == pytest.approx(attrs["n_visual"] + int((arrays["kind"] == 1).sum()))
        if method == "dycoke":
            assert looks[V.PRUNED] > 0 and looks[V.OWN] > 0
        elif method == "dyntok":
            assert looks[V.MEMBER] > 0
        else:
            assert looks[V.CLUSTER] > 0


def hand_plan(path, parent):
    """A token store of one 2-frame video on a 2x2 base grid whose plan has every look.

    Cells (t, h, w) -> flat t*4 + h*2 + w. Token 0 = 0.8*cell 0 + 0.2*cell 1, token 1 = cells 1 and 3
    (cell 1 feeds it more than token 0, so it is drawn as token 1's), token 2 = cells 2 and 6 (one cell
    in each frame), token 3 = cell 4; cells 5 and 7 feed nothing; then the newline.
    """
    from vtc.cache import Store

    st = Store.create(
        path,
        "tokens",
        {"parent": {"path": str(parent), "identity_hash": "x"}, "method": {"method": "hand", "p": 1}},
        provenance={"parent_identity": {"encoder": {"grid": [4, 4]}}},
    )
    arrays = {
        "tokens": np.zeros((5, 2), np.float32),
        "kind": np.array([0, 0, 0, 0, 2], np.uint8),
        "pos": np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1]], np.int32),
        "indptr": np.array([0, 2, 4, 6, 7, 7], np.int64),
        "src": np.array([0, 1, 1, 3, 2, 6, 4], np.int64),
        "weight": np.array([0.8, 0.2, 0.5, 0.5, 0.5, 0.5, 1.0], np.float32),
    }
    attrs = {"base": "pooled", "base_grid": [2, 2, 2], "n_input_tokens": 32, "n_llm_tokens": 5, "n_visual": 4}
    st.write(VID, arrays, attrs, summary={"n_input_tokens": 32, "n_llm_tokens": 5, "n_frames": 2})
    return st


def test_a_hand_made_plan_gets_every_look(tmp_path):
    st = hand_plan(tmp_path / "hand.zarr", tmp_path / "gone.zarr")
    plan = V._load_plan(st, VID)
    R, M, C, K, P = V.REPRESENTATIVE, V.MEMBER, V.CLUSTER, V.OWN, V.PRUNED
    assert plan.cell.tolist() == [R, R, C, M, K, P, C, P]
    assert plan.owner.tolist() == [0, 1, 2, 1, 3, -1, 2, -1]
    assert plan.per_frame.tolist() == pytest.approx([2.5, 1.5])  # token 2 is half in each frame

    out = tmp_path / "hand.png"
    r = V.viz(VID, [tmp_path / "hand.zarr"], out, tile=TILE)
    assert not r.source_found and r.frames == [0, 1] and r.labels == ["hand p=1 · 5 tokens"]
    assert any("not found" in n for n in r.notes)
    t0, t1 = tile_of(out, 0, 0, TILE).astype(int), tile_of(out, 0, 1, TILE).astype(int)
    centre = {(h, w): (40 + 80 * h, 40 + 80 * w) for h in (0, 1) for w in (0, 1)}

    def px(tile, hw, dy=0):
        y, x = centre[hw]
        return tile[y + dy, x].tolist()

    assert px(t1, (0, 0)) == [V.GREY] * 3  # an own token is left as it is
    assert px(t0, (1, 0)) == px(t1, (1, 0)) != [V.GREY] * 3  # one cluster, one colour in both frames
    assert max(px(t1, (0, 1))) < V.GREY and max(px(t1, (1, 1), 3)) < V.GREY  # pruned: dimmed
    assert px(t0, (1, 1)) != [V.GREY] * 3 and px(t0, (1, 1)) != px(t0, (0, 1))  # member greyed
    assert px(t0, (0, 1), 30) == [V.GREY] * 3  # a representative is untouched off its dot
    assert px(t0, (0, 1)) != px(t0, (0, 0)) != [V.GREY] * 3  # two groups, two dot colours


def test_without_the_source_video_cells_are_drawn_on_grey(work, tmp_path, capsys):
    moved = tmp_path / "moved.mp4"
    shutil.move(work["video"], moved)
    try:
        out = tmp_path / "grey.png"
        code, stdout, stderr = run_cli(
            ["viz", VID, "--tokens", f"{work['dycoke']},{work['dyntok']}", "--out", out, "--max-frames", "2"],
            capsys,
        )
        code_j, stdout_j, _ = run_cli(
            ["viz", VID, "-t", work["dycoke"], "-o", tmp_path / "g.png", "--json"], capsys
        )
    finally:
        shutil.move(moved, work["video"])
    assert code == 0, stderr
    assert "source video not found" in stderr and str(work["video"].resolve()) in stderr
    assert f"wrote {out}" in stdout and "dycoke" in stdout and "dyntok" in stdout
    from PIL import Image

    # the tiny tower's grid is square (27x27): without the source's aspect the tiles are too
    assert Image.open(out).size == expected_size(2, 2, TILE)
    # frame 0 of DyCoke is all own tokens: grey, apart from the grid lines
    drawn = tile_of(out, 0, 0, TILE)
    assert np.median(drawn) == V.GREY and (drawn <= V.GREY).all()
    assert code_j == 0
    r = json.loads(stdout_j)
    assert r["source_found"] is False and r["frame_indices"] == [0, 2, 4, 6, 8, 11]


def test_without_recorded_frame_indices_frames_are_evenly_spaced(work, tmp_path):
    from vtc.cache import Store
    from vtc.cache.store import video_key
    from vtc.stages.compress import CompressOptions, compress

    feats = tmp_path / "f.zarr"
    shutil.copytree(work["feats"], feats)
    shutil.rmtree(feats / "videos" / video_key(VID) / "frame_indices")  # as an older store would lack it
    assert "frame_indices" not in Store.open(feats).load(VID)[0]
    compress(CompressOptions(feats, "uniform", {}, out=tmp_path / "u.zarr"), quiet=True)
    r = V.viz(VID, [tmp_path / "u.zarr"], tmp_path / "u.png", max_frames=3, tile=TILE)
    assert r.source_found and r.frames == [0, 2, 5]
    assert r.frame_indices == [0, 4, 11]  # linspace over the video's 12 frames, as extraction sampled


@pytest.mark.parametrize(
    "case",
    ["unknown video", "feature store", "no store", "other parent", "missing dir", "out is a dir", "not png"],
)
def test_bad_input_is_one_line(work, tmp_path, capsys, case):
    from vtc.stages.compress import CompressOptions, compress

    tokens, out, vid = str(work["dyntok"]), tmp_path / "x.png", VID
    if case == "unknown video":
        vid, want = "nope", "video 'nope' is not in"
    elif case == "feature store":
        tokens, want = f"{work['dyntok']},{work['feats']}", "is a features store, expected a tokens store"
    elif case == "no store":
        tokens, want = str(tmp_path / "nothing.zarr"), "not a vtc store"
    elif case == "other parent":
        # the same video in a copy of the feature store: its frames could differ, so it is refused
        shutil.copytree(work["feats"], tmp_path / "copy.zarr")
        compress(CompressOptions(tmp_path / "copy.zarr", "uniform", {}, out=tmp_path / "u.zarr"), quiet=True)
        tokens, want = f"{work['dyntok']},{tmp_path / 'u.zarr'}", "comes from feature store"
    elif case == "missing dir":
        out, want = tmp_path / "no" / "x.png", "does not exist"
    elif case == "out is a dir":
        out.mkdir()
        want = "it is a directory"
    else:
        out, want = tmp_path / "x.jpg", "must be a .png"
    code, _, stderr = run_cli(["viz", vid, "--tokens", tokens, "--out", out], capsys)
    assert code == 2 and want in stderr, stderr
    assert stderr.startswith("error: ") and stderr.strip().count("\n") == 0
    assert not list(tmp_path.rglob("*.png")) or case == "out is a dir"


def test_help_ends_with_examples(capsys):
    code, stdout, _ = run_cli(["viz", "--help"], capsys)
    assert code == 0
    tail = [line.strip(" │") for line in stdout.strip().splitlines()[-4:]]
    assert tail[-1].startswith("vtc viz ") and "--tokens" in stdout and "--max-frames" in stdout
