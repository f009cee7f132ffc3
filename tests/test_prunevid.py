"""`prunevid` (PruneVid, arXiv 2412.16117, pre-LLM stage): the official code's partitions, hand-checkable
scenes / static tokens / clusters, and the default retained share on 32 frames."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from vtc.reducers import get_reducer
from vtc.reducers.cluster import dpc_knn
from vtc.reducers.prunevid import PruneVid, contiguous_scenes

ORACLE_SHAPE = (16, (8, 8), 32)  # T, grid, C: PLLaVA's 16 frames on a small grid, so every branch runs


def oracle_input(seed: int) -> torch.Tensor:
    """[T, N, C]: three scenes of random length, each a background plus a scene-wide offset (so the frame
    means tell scenes apart); a static position's noise scale s puts its pairwise cosine ~ 5 / (5 + s^2)
    around tau = 0.8; ~30% of positions are redrawn every frame (cosine ~ 0.64: dynamic). Seeds >= 8 are
    calmer (s < 1, ~15% redrawn), so most positions are static and frames keep <= 14 dynamic tokens."""
    T, (H, W), C = ORACLE_SHAPE
    N = H * W
    g = torch.Generator().manual_seed(seed)
    cuts = sorted((torch.randperm(T - 1, generator=g)[:2] + 1).tolist())
    bounds = [0, *cuts, T]
    frames = []
    for s in range(3):
        offset = 2.0 * torch.randn(1, C, generator=g)
        background = offset + torch.randn(N, C, generator=g)
        scale = torch.rand(N, 1, generator=g) * (1.0 if seed >= 8 else 2.2)
        moving = torch.rand(N, generator=g) < (0.15 if seed >= 8 else 0.3)
        for _ in range(bounds[s], bounds[s + 1]):
            f = background + scale * torch.randn(N, C, generator=g)
            f[moving] = offset + 1.5 * torch.randn(int(moving.sum()), C, generator=g)
            frames.append(f)
    return torch.stack(frames)


@functools.cache
def oracle() -> dict:
    return json.loads((Path(__file__).parent / "data" / "prunevid_official.json").read_text())


def partition(groups) -> set[frozenset[int]]:
    return {frozenset(g) for g in groups}


def test_partitions_are_the_official_ones():
    """tests/data/prunevid_official.json: Visual-AI/PruneVid's `merge_frames_dynamic` (commit b12600c6,
    tau 0.8, k 7, temporal_segment_ratio 0.25, cluster_ratio 0.5), run unchanged outside the repository
    on 8 seeded inputs; which base tokens each of its output tokens averages (read off its Jacobian)."""
    ref = oracle()
    T, (H, W), C = ORACLE_SHAPE
    assert (ref["T"], tuple(ref["grid"]), ref["C"]) == (T, (H, W), C)
    r = get_reducer("prunevid", grid="native")  # native: the official code gets the grid as it is
    for seed, want in ref["seeds"].items():
        red = r(oracle_input(int(seed)), (H, W))
        official: dict[int, list[int]] = {}
        for b, g in enumerate(want["group"]):
            official.setdefault(g, []).append(b)
        assert partition(red.visual_groups()) == partition(official.values()), seed
        assert torch.bincount(red.extras["segment"].long()).tolist() == want["window_sizes"], seed
        static = red.extras["static"].bool()
        assert int(static.sum()) == sum(want["static_sizes"]), seed
        assert int((~static).sum()) == sum(want["dynamic_sizes"]), seed


def test_tokens_are_uniform_means():
    red = get_reducer("prunevid", grid="native")(oracle_input(0), (8, 8))
    counts = red.indptr[1:] - red.indptr[:-1]
    sizes = torch.repeat_interleave(counts, counts).float()
    torch.testing.assert_close(red.weight, 1.0 / sizes)


def test_contiguous_scenes_by_hand():
    assert contiguous_scenes([0, 0, 1, 1, 1]) == [2, 3]
    # cluster 2's lone frame joins the longer neighbouring run (the right one, 3 frames)
    assert contiguous_scenes([0, 0, 2, 1, 1, 1]) == [2, 4]
    # equal neighbours: the left run takes it
    assert contiguous_scenes([0, 0, 2, 1, 1]) == [3, 2]
    # cluster 0 keeps its longest run (3 frames); its other run (1 frame) goes to the neighbour
    assert contiguous_scenes([0, 0, 0, 1, 1, 0]) == [3, 3]
    # two equally long runs of one cluster are both kept: scenes are runs, not clusters
    assert contiguous_scenes([0, 0, 1, 1, 0, 0]) == [2, 2, 2]
    # no cluster has a run longer than one frame: one scene
    assert contiguous_scenes([0, 1, 2, 0, 1]) == [5]


def test_dpc_knn_by_hand():
    """Two tight blobs of 3 points on a line: the blob centres are the densest points; 2 clusters split
    them; each point joins its blob."""
    x = torch.tensor([[0.0], [0.1], [-0.1], [10.0], [10.1], [9.9]])
    label = dpc_knn(x, 2, k=2)[1]
    assert label[:3].unique().numel() == 1 and label[3:].unique().numel() == 1
    assert label[0] != label[3]
    # the centres are clusters 0 and 1 of their own points: the middle points (index 0 and 3) are densest
    assert sorted(label[[0, 3]].tolist()) == [0, 1]
    # duplicates: equal density ordered by index, so only one of two identical points can be a centre
    dup = torch.tensor([[0.0], [0.0], [5.0]])
    assert dpc_knn(dup, 2, k=2)[1].tolist() in ([0, 0, 1], [1, 1, 0])


def test_a_static_scene_becomes_one_frame_of_tokens():
    """Two scenes of 4 identical frames each, on a 3x3 grid (n = 9 <= 14: no spatial clustering): every
    position is static, so each scene gives 9 tokens, each the mean of its position over the scene."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, 16, generator=g), torch.randn(9, 16, generator=g)
    x = torch.stack([a] * 4 + [b] * 4)
    red = PruneVid(grid="native", temporal_segment_ratio=0.25)(x, (3, 3))
    assert red.extras["segment"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert red.n_visual() == 18 and red.extras["static"].tolist() == [1] * 18
    assert red.visual_groups()[0] == [0, 9, 18, 27]  # position 0 over frames 0..3
    torch.testing.assert_close(red.tokens[:9], a)
    torch.testing.assert_close(red.tokens[9:18], b)


def test_static_and_dynamic_positions_by_hand():
    """One scene (T = 2, 2 frames): positions 0-3 repeat, 4-8 are opposite (cosine -1 < tau): 4 static
    tokens (2 frames each) then 5 dynamic tokens per frame, none clustered (sets of <= 14)."""
    g = torch.Generator().manual_seed(1)
    f = torch.randn(9, 8, generator=g)
    x = torch.stack([f, torch.cat([f[:4], -f[4:]])])
    red = PruneVid(grid="native")(x, (3, 3))
    groups = red.visual_groups()
    assert groups == [
        [0, 9],
        [1, 10],
        [2, 11],
        [3, 12],
        [4],
        [5],
        [6],
        [7],
        [8],
        [13],
        [14],
        [15],
        [16],
        [17],
    ]
    assert red.extras["static"].tolist() == [1] * 4 + [0] * 10


def test_tau_decides_static():
    """The same frames with tau above / below the pairwise cosine: all dynamic / all static."""
    g = torch.Generator().manual_seed(2)
    f = torch.randn(9, 64, generator=g)
    x = torch.stack([f, f + 0.5 * torch.randn(9, 64, generator=g)])  # cosines ~ 0.9
    cos = torch.nn.functional.cosine_similarity(x[0], x[1], dim=-1)
    hi = PruneVid(grid="native", tau=float(cos.max()) + 1e-3)(x, (3, 3))
    lo = PruneVid(grid="native", tau=float(cos.min()) - 1e-3)(x, (3, 3))
    assert hi.n_visual() == 18 and int(hi.extras["static"].sum()) == 0
    assert lo.n_visual() == 9 and int(lo.extras["static"].sum()) == 9


def test_spatial_clusters_keep_the_ratio():
    """A frame of 196 unrelated tokens is all dynamic; the set is clustered into int(196 * ratio) tokens."""
    x = torch.randn(1, 196, 16, generator=torch.Generator().manual_seed(3))
    for ratio, want in [(0.5, 98), (0.25, 49), (1.0, 196)]:
        red = PruneVid(grid="native", cluster_ratio=ratio)(x, (14, 14))
        assert red.n_visual() == want, ratio
        assert sorted(b for g in red.visual_groups() for b in g) == list(range(196))


def test_default_keeps_half_of_a_random_video():
    """32 frames x 729 native -> 32 x 196 pooled. Random frames have no static tokens, so each frame's
    196 dynamic tokens cluster into int(196 * 0.5) = 98: 3,136 of 6,272 (50%). The paper's overall 17% on
    LLaVA-OV comes after the in-LLM stage keeps 40% (alpha), on videos whose static tokens merge too."""
    x = torch.randn(32, 729, 32, generator=torch.Generator().manual_seed(4))
    red = get_reducer("prunevid")(x, (27, 27))
    assert red.base_grid == (32, 14, 14)
    assert red.n_visual() == 3136
    assert int(red.extras["static"].sum()) == 0
    assert red.extras["segment"].shape == (32,)


def test_default_on_a_video_with_a_static_background():
    """32 frames of one background (pooled 14x14) where the left half of every frame is redrawn: the
    right 98 positions are static in every scene. Each scene gives int(98 * 0.5) = 49 static tokens and
    int(98 * 0.5) = 49 dynamic tokens per frame, so 49 * scenes + 49 * 32 of 6,272."""
    g = torch.Generator().manual_seed(5)
    background = torch.randn(196, 64, generator=g)
    frames = []
    for _ in range(32):
        f = background + 0.05 * torch.randn(196, 64, generator=g)
        f.view(14, 14, 64)[:, :7] = torch.randn(14, 7, 64, generator=g)
        frames.append(f)
    red = PruneVid(grid="native")(torch.stack(frames), (14, 14))
    scenes = int(red.extras["segment"].max()) + 1
    assert red.n_visual() == 49 * scenes + 49 * 32
    assert int(red.extras["static"].sum()) == 49 * scenes
    assert red.n_visual() / 6272 < 0.5


def test_decision_flops_by_hand():
    # T = 2, 3x3, C = 8, one scene, 4 static + 5 dynamic positions, no set clustered: the frame means
    # (2*9*8), their 2x2 distances and 2 norms, the scene's 2x2 cosines at 9 positions and 18 norms
    g = torch.Generator().manual_seed(1)
    f = torch.randn(9, 8, generator=g)
    x = torch.stack([f, torch.cat([f[:4], -f[4:]])])
    r = PruneVid(grid="native")
    assert r.decision_flops(r(x, (3, 3)), 8) == 2 * 9 * 8 + 2 * 8 * (4 + 2) + 2 * 8 * (4 * 9 + 18)
    # T = 1, 14x14, C = 16: no scenes, no static test; one set of 196 dynamic tokens clustered
    x = torch.randn(1, 196, 16, generator=torch.Generator().manual_seed(3))
    assert r.decision_flops(r(x, (14, 14)), 16) == 2 * 16 * (196 * 196 + 196)
