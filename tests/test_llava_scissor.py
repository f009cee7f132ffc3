"""`llava-scissor` (LLaVA-Scissor, arXiv 2506.21862): components and the final fold on hand-placed tokens,
a static video folded across frames, and the tokens against a plain-loop reference of the algorithm."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vtc.reducers import get_reducer
from vtc.reducers.base import KIND_VISUAL


def plan_rows(r):
    return [
        (r.src[r.indptr[k] : r.indptr[k + 1]].tolist(), r.weight[r.indptr[k] : r.indptr[k + 1]].tolist())
        for k in range(r.n_visual())
    ]


def test_hand_placed_tokens():
    # one frame of 4 tokens (grid 2x2, native): x0 and x1 are connected (cos 0.99995 > 0.95), x2 and x3
    # are apart (cos 0.8 and 0.6). Components {0, 1}, {2}, {3}; nothing connects across them. Each token
    # joins its own component; {0, 1} -> (mean(x0, x1) + x0 + x1) / 3: weights 1/2 and 1/2.
    x = torch.tensor([[[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.6, 0.8]]])
    r = get_reducer("llava-scissor", grid="native")(x, (2, 2))
    assert r.n_visual() == 3
    rows = plan_rows(r)
    assert [s for s, _ in rows] == [[0, 1], [2], [3]]
    torch.testing.assert_close(torch.tensor(rows[0][1]), torch.tensor([0.5, 0.5]))
    assert rows[1][1] == [1.0] and rows[2][1] == [1.0]
    torch.testing.assert_close(r.tokens[0], (x[0, 0] + x[0, 1]) / 2)


def test_a_static_video_folds_across_frames():
    g = torch.Generator().manual_seed(0)
    frame = F.normalize(torch.randn(9, 16, generator=g), dim=-1)  # 9 tokens, pairwise far apart
    x = torch.stack([frame, frame, frame])  # three identical frames
    r = get_reducer("llava-scissor", grid="native")(x, (3, 3))
    assert r.n_visual() == 9  # each position's three copies are one component across frames
    for k, (src, w) in enumerate(plan_rows(r)):
        assert sorted(s % 9 for s in src) == [k] * 3 and len(set(src)) == 3  # the same position, 3 frames
        torch.testing.assert_close(torch.tensor(w), torch.full((3,), 1 / 3))


def reference(x: torch.Tensor, tau: float) -> torch.Tensor:
    """The algorithm with plain loops: union-find components, means, nearest-component fold."""

    def comps(v):
        parent = list(range(len(v)))

        def find(i):
            while parent[i] != i:
                i = parent[i]
            return i

        u = F.normalize(v, dim=-1)
        for i in range(len(v)):
            for j in range(len(v)):
                if float(u[i] @ u[j]) > tau:
                    parent[find(i)] = find(j)
        groups: dict[int, list[int]] = {}
        for i in range(len(v)):
            groups.setdefault(find(i), []).append(i)
        return list(groups.values())

    s1 = torch.stack([x[t][c].mean(0) for t in range(x.shape[0]) for c in comps(x[t])])
    s2 = torch.stack([s1[c].mean(0) for c in comps(s1)])
    flat = x.reshape(-1, x.shape[-1])
    near = (F.normalize(flat, dim=-1) @ F.normalize(s2, dim=-1).T).argmax(1)
    out = [(s2[k] + flat[near == k].sum(0)) / (int((near == k).sum()) + 1) for k in range(len(s2))]
    return torch.stack(out)


def test_tokens_equal_the_plain_loop():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(12, 8, generator=g)
    x = torch.stack([base + 0.15 * torch.randn(12, 8, generator=g) for _ in range(4)])  # [4, 12, 8]
    r = get_reducer("llava-scissor", grid="native", tau="0.9")(x, (3, 4))
    ref = reference(x, 0.9)
    ours = r.tokens[r.kind == KIND_VISUAL]
    assert ours.shape == ref.shape and 4 <= ours.shape[0] < 48
    # the same tokens (our rows are in raster order of their pos, the reference's in component order)
    d = torch.cdist(ours, ref)
    assert torch.all(d.min(dim=1).values < 1e-5) and torch.all(d.min(dim=0).values < 1e-5)
