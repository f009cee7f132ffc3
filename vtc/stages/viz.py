"""Draw what token stores did to one video: every base-grid cell of the sampled frames, coloured by the
output token it feeds, one row per store, read from the stored plan alone (no per-method code).

A plan says output token n = sum_j weight[j] * base[src[j]] (see vtc.reducers.base). Each base cell is
drawn by the output token it gives its largest weight to (ties: the first token), and that token's
sources decide the look:

- no output token          -> pruned: dimmed (DyCoke's figures);
- a token of one source    -> its own token: untouched;
- a token of several sources, all in one frame -> merged group: a coloured outline per group, the
  representative (the token's ``pos``, its largest-weight source) bright, the other members greyed
  (DynTok's Fig. 1);
- a token whose sources span several frames -> cluster: the token's colour over every cell it gathers,
  the same colour in every frame (VQToken's Fig. 2).

Frames are re-read from the source video the feature store recorded, at the indices sampled at
extraction, only for display; without it the cells are drawn on grey and the image says so.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vtc.cache import Store
from vtc.errors import VtcError

# Layout in pixels. Image size: width = max(MIN_WIDTH, PAD + n_cols * (tile + PAD)),
# height = HEAD_H + COL_H + n_rows * (LABEL_H + tile_h + STRIP_H + PAD).
PAD, HEAD_H, COL_H, LABEL_H, STRIP_H, MIN_WIDTH = 6, 40, 16, 32, 14, 640  # the legend needs 622
FONT_SIZE = 11
GREY = 128  # the neutral background without the source video
PRUNED, OWN, MEMBER, REPRESENTATIVE, CLUSTER = range(5)  # what a base cell is, per the plan
_KIND_VISUAL, _KIND_MARKER = 0, 1  # vtc.reducers.base's KIND_*, without importing torch


@dataclass
class VizResult:
    out: Path
    video_id: str
    size: tuple[int, int]  # (width, height) of the PNG in pixels
    labels: list[str]  # one per store (image row), in the order given
    frames: list[int]  # base-grid frames shown (image columns)
    frame_indices: list[int] | None  # their frame numbers in the source video, where known
    source: str | None  # the source video the feature store recorded
    source_found: bool  # False: the cells were drawn on grey
    notes: list[str] = field(default_factory=list)  # why the source is not shown, and the like

    def to_dict(self) -> dict:
        return {**asdict(self), "out": str(self.out)}


@dataclass
class _Plan:
    """One store's plan for the video, as numpy arrays. N outputs, T*Hb*Wb base cells."""

    label: str  # method, parameters, token counts
    detail: str  # second label line
    base_grid: tuple[int, int, int]  # (T, Hb, Wb)
    cell: np.ndarray  # int8 [T*Hb*Wb]: PRUNED ... CLUSTER
    owner: np.ndarray  # int64 [T*Hb*Wb]: the output token the cell feeds most (-1: none)
    colour: np.ndarray  # float32 [N, 3] in 0..255, of merged groups and clusters
    per_frame: np.ndarray  # float64 [T]: visual tokens by source weight, plus markers


def viz(
    video_id: str,
    stores: Sequence[str | Path],
    out: str | Path,
    max_frames: int = 8,
    tile: int = 160,
) -> VizResult:
    """Draw ``video_id``'s plan in each token store of ``stores`` (one row each) into the PNG ``out``.

    Columns are at most ``max_frames`` of the video's T frames, evenly picked; each is ``tile`` pixels
    wide, as high as the source's aspect gives (the feature grid's aspect without the source). Under
    each frame a strip gives the tokens that frame contributes: each visual token split across frames by
    its source weights (a cluster over 3 frames counts 1/3 in each), plus the row markers it closes.
    The stores must come from one feature store. Bad input raises a one-line VtcError.
    """
    if not stores:
        raise VtcError("give at least one token store (--tokens A.zarr[,B.zarr...])")
    if max_frames < 1:
        raise VtcError(f"--max-frames must be >= 1, got {max_frames}")
    if tile < 32:
        raise VtcError(f"--tile must be >= 32 pixels, got {tile}")
    out = _check_out(Path(out))
    opened = [Store.open(s, kind="tokens") for s in stores]
    parent, grid, T, tp, family = _common_parent(opened, video_id)
    plans = [_load_plan(st, video_id) for st in opened]
    for st, plan in zip(opened, plans, strict=True):
        if plan.base_grid[0] != T:
            raise VtcError(f"video '{video_id}' in {st.path}: plan has {plan.base_grid[0]} frames, index {T}")

    cols = np.unique(np.linspace(0, T - 1, min(T, max_frames)).round().astype(np.int64))
    notes: list[str] = []
    src = _source(parent, opened[0], video_id, notes)
    for name in ("frame_indices", "timestamps"):  # per base-grid step: a Qwen2.5-VL step's first frame
        a = src[name]
        src[name] = None if a is None else a[np.minimum(np.arange(T) * tp, len(a) - 1)]
    picked = None if src["frame_indices"] is None else src["frame_indices"][cols]
    frames = _read_frames(src, cols, T, picked, notes)
    if picked is None and frames is not None:
        picked = src["frame_indices_shown"]  # evenly spaced over the video, as decoded
    if frames is None:
        tile_h = max(8, round(tile * grid[0] / grid[1]))  # the aspect the tower saw
        shown = [np.full((tile_h, tile, 3), GREY, np.uint8)] * len(cols)
    else:
        h, w = frames[0].shape[:2]
        tile_h = max(8, round(tile * h / w))
        shown = [_resize(f, tile, tile_h) for f in frames]

    stock = family.stock_per_step(grid)  # the stock model's visual tokens per frame (Qwen: per pair)
    img = _render(
        video_id,
        plans,
        cols,
        shown,
        src["path"],
        frames is not None,
        picked,
        src["timestamps"],
        stock,
        tile,
        tile_h,
    )
    _save(img, out)
    return VizResult(
        out=out,
        video_id=video_id,
        size=img.size,
        labels=[p.label for p in plans],
        frames=cols.tolist(),
        frame_indices=None if picked is None else picked.tolist(),
        source=src["path"],
        source_found=frames is not None,
        notes=notes,
    )


# ------------------------------------------------------------------------------------ inputs


def _check_out(out: Path) -> Path:
    """Refuse an --out we could not write before any work is done."""
    if out.suffix.lower() != ".png":
        raise VtcError(f"--out must be a .png file, got {out}")
    if out.is_dir():
        raise VtcError(f"cannot write {out}: it is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise VtcError(f"cannot write {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise VtcError(f"cannot write {out}: permission denied")
    return out


def _common_parent(stores: list[Store], video_id: str):
    """(feature store path, feature grid (H, W), frames T, frames per step, model family) shared by every
    store, else a VtcError. Qwen2.5-VL's grid is the video's own and a step is a pair of frames."""
    from vtc.families import encoder_family, frames_per_step

    seen = []
    for st in stores:
        ident = st.meta.get("identity") or {}
        parent = (ident.get("parent") or {}).get("path")
        enc = (st.meta.get("parent_identity") or {}).get("encoder") or {}
        if parent is None or "grid" not in enc:
            raise VtcError(f"{st.path} records no parent feature store; not written by `vtc compress`")
        entry = st.entries().get(video_id)
        if entry is None or entry["status"] != "done":
            why = f" (failed: {entry['reason']})" if entry else ""
            raise VtcError(f"video '{video_id}' is not in {st.path}{why}")
        grid = enc["grid"] or st.read(video_id)[1].get("grid")
        if not grid:
            raise VtcError(f"video '{video_id}' in {st.path} records no grid; compress it again")
        seen.append((st.path, str(parent), tuple(int(v) for v in grid), int(entry["n_frames"])))
    p0, parent0, grid0, t0 = seen[0]
    for p, parent, grid, t in seen[1:]:
        if parent != parent0:
            raise VtcError(
                f"{p} comes from feature store {parent}, {p0} from {parent0}; draw stores of one feature store"
            )
        if (grid, t) != (grid0, t0):  # same parent path, rewritten in between
            raise VtcError(
                f"{p} has grid {grid} x {t} frames for '{video_id}', {p0} has {grid0} x {t0} frames"
            )
    enc = stores[0].meta["parent_identity"]["encoder"]
    return parent0, grid0, t0, frames_per_step(enc), encoder_family(enc)


def _load_plan(st: Store, video_id: str) -> _Plan:
    names = ("kind", "pos", "indptr", "src", "weight")
    arrays, attrs = st.load(video_id, names)  # not "tokens": the largest array, and not drawn
    missing = [n for n in (*names, "base_grid") if n not in arrays and n not in attrs]
    if missing:
        raise VtcError(f"video '{video_id}' in {st.path} has no '{missing[0]}'; not a token store entry")
    T, Hb, Wb = (int(v) for v in attrs["base_grid"])
    kind = arrays["kind"].astype(np.int64)
    pos = arrays["pos"].astype(np.int64).reshape(-1, 3)
    indptr, src = arrays["indptr"].astype(np.int64), arrays["src"].astype(np.int64)
    weight = arrays["weight"].astype(np.float64)
    n, nb = kind.shape[0], T * Hb * Wb
    if (
        indptr.shape != (n + 1,)
        or pos.shape[0] != n
        or indptr[0] != 0
        or np.any(np.diff(indptr) < 0)
        or indptr[-1] != src.shape[0]
        or src.shape != weight.shape
        or (src.size and (src.min() < 0 or src.max() >= nb))
    ):
        raise VtcError(f"video '{video_id}' in {st.path}: the stored plan is inconsistent (damaged store?)")

    row = np.repeat(np.arange(n), np.diff(indptr))  # [nnz] output token of each entry
    size = np.diff(indptr)
    # A cell goes to the token it feeds most: bilinear plans share a cell between neighbouring tokens.
    order = np.lexsort((row, -weight, src))
    cells, first = np.unique(src[order], return_index=True)
    owner = np.full(nb, -1, np.int64)
    owner[cells] = row[order][first]
    frame_of = src // (Hb * Wb)
    pairs = np.unique(np.stack((row, frame_of)), axis=1) if src.size else np.zeros((2, 0), np.int64)
    span = np.bincount(pairs[0], minlength=n)  # [N] frames each token's sources cover
    rep = pos[:, 0] * Hb * Wb + pos[:, 1] * Wb + pos[:, 2]  # [N] each token's representative cell

    cell = np.full(nb, PRUNED, np.int8)
    fed = owner >= 0
    o = owner[fed]
    cell[fed] = np.where(
        span[o] > 1,
        CLUSTER,
        np.where(size[o] == 1, OWN, np.where(rep[o] == np.flatnonzero(fed), REPRESENTATIVE, MEMBER)),
    )
    # Groups and clusters numbered in output order, so neighbouring groups get distant hues.
    grouped = (size > 1) & (kind == _KIND_VISUAL)
    colour = np.zeros((n, 3), np.float32)
    colour[grouped] = _palette(int(grouped.sum()))

    per_frame = np.bincount(frame_of, weights=weight, minlength=T)[:T]
    markers = pos[kind == _KIND_MARKER, 0]
    per_frame = per_frame + np.bincount(markers[(markers >= 0) & (markers < T)], minlength=T)[:T]

    method = dict((st.meta.get("identity") or {}).get("method") or {"method": "?"})
    n_vis, n_mark = int((kind == _KIND_VISUAL).sum()), int((kind == _KIND_MARKER).sum())
    n_llm = int(attrs.get("n_llm_tokens", n))
    from vtc.reducers.registry import method_label  # lazily: the registry imports torch

    label = f"{method_label(method)} · {n_llm} tokens"  # the parameters that differ from the defaults
    parts = (
        [f"{n_vis} visual"] + ([f"{n_mark} markers"] if n_mark else []) + [f"{n - n_vis - n_mark} newline"]
    )
    detail = (
        f"{n_llm} LLM tokens ({', '.join(parts)}) of {int(attrs.get('n_input_tokens', nb))} input"
        f" · base {attrs['base']} {T}x{Hb}x{Wb} · {st.path.name}"
    )
    return _Plan(label, detail, (T, Hb, Wb), cell, owner, colour, per_frame)


def _palette(k: int) -> np.ndarray:
    """float32 [k, 3] in 0..255: golden-ratio hues, so consecutive ids differ and any k works."""
    hues = (0.12 + 0.6180339887 * np.arange(k)) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.8, 0.95) for h in hues], dtype=np.float32).reshape(k, 3) * 255


def _source(parent: str, tok: Store, video_id: str, notes: list[str]) -> dict:
    """What the feature store recorded about the video: path, decoder, sampled frame indices, times."""
    info = {"path": None, "decoder": None, "frame_indices": None, "timestamps": None, "fingerprint": None}
    try:
        feats = Store.open(parent, kind="features")
    except VtcError:
        notes.append(f"feature store {parent} not found: frame numbers and source video unknown")
        return info
    want = ((tok.meta.get("identity") or {}).get("parent") or {}).get("identity_hash")
    if want and feats.meta.get("identity_hash") != want:
        notes.append(f"feature store {parent} was rewritten since compression: its video not used")
        return info
    if not feats.has(video_id):
        notes.append(f"video '{video_id}' is not in feature store {parent}")
        return info
    try:
        arrays, attrs = feats.load(video_id, ("frame_indices", "timestamps"))
    except VtcError as e:
        notes.append(str(e))
        return info
    info["path"] = attrs.get("source")
    info["decoder"] = attrs.get("decoder")
    info["fingerprint"] = attrs.get("fingerprint")
    n = int(feats.done()[video_id].get("n_frames", -1))
    for name in ("frame_indices", "timestamps"):
        a = arrays.get(name)
        if a is not None and a.ndim == 1 and a.shape[0] == n:
            info[name] = a
    return info


class _Fixed:
    """A SamplingPolicy look-alike for decode_video: the given indices, or T uniform ones picked at cols."""

    def __init__(self, fixed: np.ndarray | None, cols: np.ndarray, T: int):
        self.fixed, self.cols, self.T = fixed, cols, T

    def indices(self, total: int, fps: float) -> np.ndarray:
        if self.fixed is not None:
            return np.minimum(self.fixed, max(total - 1, 0))
        from vtc.video.sampling import uniform_indices

        return uniform_indices(total, self.T)[self.cols] if total > 0 else np.zeros(0, np.int64)


def _read_frames(src: dict, cols, T: int, picked, notes: list[str]) -> list[np.ndarray] | None:
    """uint8 [H, W, 3] frames at the shown columns, from the source video; None (with a note) without it."""
    from vtc.video import VideoError, decode_video, fingerprint, list_backends

    path = src["path"]
    if path is None:
        notes.append("source video unknown: frames drawn on grey")
        return None
    if not Path(path).is_file():
        notes.append(f"source video not found ({path}): frames drawn on grey")
        return None
    backends = list_backends()
    if not backends:
        notes.append("no video decoder (decord or PyAV) here: frames drawn on grey")
        return None
    backend = src["decoder"] if src["decoder"] in backends else backends[0]
    try:
        # size and content only: a copy or a touch changes the mtime, not the frames
        now, then = fingerprint(path), src["fingerprint"] or {}
        if then and any(now.get(k) != then.get(k) for k in ("size", "head_sha1")):
            notes.append(f"source video {path} changed since extraction: frames may not match the tokens")
        video = decode_video(path, _Fixed(picked, cols, T), backend=backend, size=None)
    except (VideoError, OSError, ValueError) as e:
        notes.append(f"source video {path} unreadable ({e}): frames drawn on grey")
        return None
    if len(video.frames) != len(cols):
        notes.append(f"source video {path} gave {len(video.frames)} frames, not {len(cols)}: drawn on grey")
        return None
    if picked is None:
        src["frame_indices_shown"] = video.frame_indices
    return list(video.frames)


def _resize(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).convert("RGB").resize((w, h), Image.Resampling.BICUBIC))


# ------------------------------------------------------------------------------------ drawing


def _edges(m: np.ndarray, d: int) -> np.ndarray:
    """bool [H, W]: pixels within ``d`` pixels (along x or y) of a pixel with a different value of m."""
    e = np.zeros(m.shape, bool)
    for s in range(1, d + 1):
        dx, dy = m[:, :-s] != m[:, s:], m[:-s] != m[s:]
        e[:, :-s] |= dx
        e[:, s:] |= dx
        e[:-s] |= dy
        e[s:] |= dy
    return e


def _tile(plan: _Plan, t: int, frame: np.ndarray) -> np.ndarray:
    """The frame [h, w, 3] uint8 with frame t's cells of the plan drawn over it."""
    T, Hb, Wb = plan.base_grid
    h, w = frame.shape[:2]
    # nearest cell of every pixel: the base grid covers the whole (stretched) frame, as the tower saw it
    ch, cw = (np.arange(h) * Hb) // h, (np.arange(w) * Wb) // w
    idx = t * Hb * Wb + ch[:, None] * Wb + cw[None, :]
    cat, own = plan.cell[idx], plan.owner[idx]
    img = frame.astype(np.float32)
    col = plan.colour[np.maximum(own, 0)]

    # pruned: dimmed and hatched, so a dark frame's pruned cells still read as gone
    p = cat == PRUNED
    img[p] *= 0.3
    img[p & ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 6 == 0)] = 110
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = (0.5 * lum + 0.5 * 190)[..., None] * np.ones(3, np.float32)
    m = cat == MEMBER
    img[m] = 0.8 * grey[m] + 0.2 * col[m]
    c = cat == CLUSTER
    img[c] = 0.35 * img[c] + 0.65 * col[c]

    # faint base-grid lines everywhere; each merged group outlined in its colour (closed at the frame
    # edge too) with a dot on its representative, which is otherwise untouched; clusters bounded by a
    # thin dark line
    lines = np.zeros(idx.shape, bool)
    lines[:, :-1] |= idx[:, :-1] != idx[:, 1:]
    lines[:-1] |= idx[:-1] != idx[1:]
    img[lines] *= 0.8
    merged = m | (cat == REPRESENTATIVE)
    cell_px = min(h / Hb, w / Wb)
    k = 2 if cell_px >= 10 else 1  # a 2-pixel outline would fill a small cell
    padded = np.pad(np.where(merged, own, -1), k, constant_values=-2)
    outline = _edges(padded, k)[k:-k, k:-k] & merged
    img[outline] = col[outline]
    r = max(1.0, 0.2 * cell_px)
    dy = np.abs(np.arange(h) + 0.5 - (ch + 0.5) * h / Hb)[:, None]
    dx = np.abs(np.arange(w) + 0.5 - (cw + 0.5) * w / Wb)[None, :]
    dot = (cat == REPRESENTATIVE) & (dy <= r) & (dx <= r)
    img[dot] = col[dot]
    border = _edges(own, 1) & c
    img[border] *= 0.45
    return np.clip(img, 0, 255).astype(np.uint8)


def _legend() -> list[tuple[np.ndarray, str]]:
    """(uint8 [12, w, 3] swatch, text) per look, from one- and two-cell plans."""
    pal = _palette(2)
    looks = (
        ((PRUNED,), (-1,), "pruned"),
        ((OWN,), (0,), "own token"),
        ((REPRESENTATIVE, MEMBER), (0, 0), "merged group (dot = representative)"),
        ((CLUSTER, CLUSTER), (0, 1), "cluster across frames (colour = token)"),
    )
    out = []
    for cells, owners, text in looks:
        n = len(cells)
        plan = _Plan("", "", (1, 1, n), np.array(cells, np.int8), np.array(owners), pal, np.zeros(1))
        out.append((_tile(plan, 0, np.full((12, 12 * n, 3), 150, np.uint8)), text))
    return out


def _fit(draw, text: str, font, width: float) -> str:
    """text cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _render(video_id, plans, cols, shown, source, found, frame_nos, times, stock, tile, tile_h):
    """The PIL image: title and legend, column heads, then per plan a label, the tiles and their strips."""
    from PIL import Image, ImageDraw, ImageFont

    n_cols, n_rows = len(cols), len(plans)
    width = max(MIN_WIDTH, PAD + n_cols * (tile + PAD))
    block = LABEL_H + tile_h + STRIP_H + PAD
    height = HEAD_H + COL_H + n_rows * block
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=FONT_SIZE)
    bold = ImageFont.load_default(size=FONT_SIZE + 1)

    title = f"{video_id} · {n_cols} of {plans[0].base_grid[0]} frames"
    if found:
        title += f" · {Path(source).name}"
        d.text((PAD, 4), _fit(d, title, bold, width - 2 * PAD), fill="black", font=bold)
    else:
        title += " · SOURCE VIDEO NOT FOUND: cells drawn on grey"
        d.text((PAD, 4), _fit(d, title, bold, width - 2 * PAD), fill=(180, 0, 0), font=bold)

    # legend: each look drawn by _tile itself on a grey frame, so it cannot drift from the picture
    x, y = PAD, 22
    for swatch, text in _legend():
        img.paste(Image.fromarray(swatch), (x, y + 1))
        x += swatch.shape[1] + 4
        d.text((x, y), text, fill="black", font=font)
        x += int(d.textlength(text, font=font)) + 12

    for j, t in enumerate(cols):
        head = f"t={int(t)}"
        if frame_nos is not None:
            head += f" · #{int(frame_nos[j])}"
        if times is not None:
            head += f" · {float(times[t]):.2f}s"
        d.text((PAD + j * (tile + PAD), HEAD_H), _fit(d, head, font, tile), fill=(60, 60, 60), font=font)

    scale = max([stock] + [float(p.per_frame.max()) for p in plans])
    for r, plan in enumerate(plans):
        y0 = HEAD_H + COL_H + r * block
        d.text((PAD, y0), _fit(d, plan.label, bold, width - 2 * PAD), fill="black", font=bold)
        d.text((PAD, y0 + 16), _fit(d, plan.detail, font, width - 2 * PAD), fill=(70, 70, 70), font=font)
        for j, t in enumerate(cols):
            x0 = PAD + j * (tile + PAD)
            img.paste(Image.fromarray(_tile(plan, int(t), shown[j])), (x0, y0 + LABEL_H))
            ys = y0 + LABEL_H + tile_h + 1
            n = float(plan.per_frame[t])
            d.rectangle((x0, ys, x0 + tile - 1, ys + STRIP_H - 3), fill=(225, 225, 225))
            bar = round((tile - 1) * n / scale) if scale > 0 else 0
            if bar > 0:
                d.rectangle((x0, ys, x0 + bar, ys + STRIP_H - 3), fill=(70, 130, 200))
            count = f"{n:.0f}" if abs(n - round(n)) < 0.05 else f"{n:.1f}"
            d.text((x0 + 3, ys - 1), f"{count} tok", fill="black", font=font)
    return img


def _save(img, out: Path) -> None:
    """Write the PNG whole or not at all: a temporary file beside it, then a rename."""
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise VtcError(f"cannot write {out}: {e.strerror or e}") from None
