"""vqtoken / tokendynamics and their cosine k-means: planted clusters, K rules, the elbow fix, the contract."""

from __future__ import annotations

import pytest
import torch

from benchmarks.reference.kmeans_loop import elbow_loop
from tests import test_reducers as contract  # the contract test, reused as a function
from vtc.reducers import KIND_VISUAL, get_reducer
from vtc.reducers.kmeans import adaptive_kmeans, elbow_k, kmeans
from vtc.reducers.tokendynamics import TokenDynamics
from vtc.reducers.vqtoken import VQToken

METHODS = [("vqtoken", "index_map", "codebook"), ("tokendynamics", "dynamics_map", "token_base")]


def planted(k: int, n: int, C: int = 16, noise: float = 0.01, seed: int = 0):
    """n = k * m points around k orthonormal directions (all pairs equally far apart, equal sizes, so the
    inertia drops by the same amount for every cluster found and the knee is clean), random norms;
    returns (x [n, C], true labels [n])."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.linalg.qr(torch.randn(C, C, generator=g)).Q[:k]  # [k, C] orthonormal rows, C >= k
    labels = torch.arange(k).repeat_interleave(n // k)[torch.randperm(n, generator=g)]
    x = centers[labels] + noise * torch.randn(n, C, generator=g)
    return x * (0.5 + torch.rand(n, 1, generator=g)), labels


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Labels equal up to a permutation of ids."""
    pairs = torch.unique(torch.stack((a, b)), dim=1)
    return pairs.shape[1] == len(a.unique()) == len(b.unique())


# --------------------------------------------------------------------------------------------------
# k-means


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_planted_clusters(seed):
    x, truth = planted(8, 600, seed=seed)
    r = kmeans(x, 8, seed=seed)
    assert same_partition(r.labels, truth)
    assert r.centroids.shape == (8, 16) and r.labels.dtype == torch.int64
    # centroid = mean of the members' unit vectors
    xn = torch.nn.functional.normalize(x, dim=1)
    torch.testing.assert_close(r.centroids[3], xn[r.labels == 3].mean(0))


def test_kmeans_seeded_and_deterministic():
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))  # no structure: ambiguous
    a, b, c = kmeans(x, 6, seed=0), kmeans(x, 6, seed=0), kmeans(x, 6, seed=1)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.labels, c.labels)


def test_kmeans_fills_empty_clusters_and_clips_k():
    x = torch.tensor([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 4)  # 2 distinct points, K = 5: duplicates
    r = kmeans(x, 5)
    assert torch.bincount(r.labels, minlength=5).min() >= 1  # every id used
    assert kmeans(x, 50).labels.unique().numel() == 10  # K clipped to N: singletons


# --------------------------------------------------------------------------------------------------
# adaptive K


@pytest.mark.parametrize("rule", ["elbow", "drop"])
def test_adaptive_finds_planted_k(rule):
    x, truth = planted(16, 1200)
    r, ks, inertias = adaptive_kmeans(x, 12, 32, rule=rule)
    assert r.centroids.shape[0] == 16 and same_partition(r.labels, truth)
    assert ks[0] == 12 and len(ks) == (21 if rule == "elbow" else 6)  # drop: 12..17, stopped at 17
    assert all(b <= a * (1 + 1e-6) for a, b in zip(inertias, inertias[1:], strict=False))


def test_elbow_offset_fix_pinned():
    """The official K = max(argmax(d2) + 4, 12) loses the k_min + 1 offset of the d2 index."""

    def official(inertias):
        i = torch.tensor(inertias)
        diffs = i[1:] - i[:-1]
        return max(int(torch.argmax(diffs[1:] - diffs[:-1])) + 2 + 2, 12)

    knee16 = [100.0, 80, 60, 40, 5] + [5 - 0.1 * j for j in range(1, 17)]  # K = 12..32, knee at 16
    assert elbow_k(knee16, 12) == 16 and official(knee16) == 12  # floored: argmax 3 -> 7 -> 12
    knee25 = [300.0 - 20 * j for j in range(14)] + [40 - 0.1 * j for j in range(1, 8)]  # knee at 25
    assert elbow_k(knee25, 12) == 25 and official(knee25) == 16  # off by exactly k_min + 1 - 4 = 9
    # the same on real fits: the loop reference with the official offset lands on 12
    x, _ = planted(16, 480, seed=3)
    assert elbow_loop(x, official_offset=True)[0] == 12


def test_matches_loop_reference_on_planted_clusters():
    x, truth = planted(16, 480, seed=3)
    k_ref, labels_ref, _, dist = elbow_loop(x)
    r, _, inertias = adaptive_kmeans(x, 12, 32)
    assert k_ref == r.centroids.shape[0] == 16
    assert same_partition(torch.as_tensor(labels_ref), truth) and same_partition(r.labels, truth)
    # at K = 16 both hold the planted partition: the same inertia; past the knee only noise is split
    assert inertias[4] == pytest.approx(dist[4], rel=1e-4)  # float32 vs float64
    assert max(inertias[4:] + dist[4:]) < 0.05 * min(inertias[3], dist[3])


# --------------------------------------------------------------------------------------------------
# the reducers


@pytest.mark.parametrize("name,map_key,book_key", METHODS)
@pytest.mark.parametrize("params", [{}, {"adaptive": "drop"}, {"k": 9}, {"budget": 20, "grid": "pooled"}])
def test_index_map_matches_plan(name, map_key, book_key, params):
    T, H, W, C = 3, 9, 11, 8
    x = contract.smooth_video(T, H, W, C, seed=4)
    r = get_reducer(name, **params)(x, (H, W))
    Tb, Hb, Wb = r.base_grid
    K = r.n_visual()
    m, book = r.extras[map_key], r.extras[book_key]
    assert m.shape == (Tb, Hb, Wb) and m.dtype == torch.int32
    assert book.shape == (K, C) and book.dtype == torch.float32
    assert int(m.min()) == 0 and int(m.max()) == K - 1
    if "k" in params or "budget" in params:
        assert K == params.get("k", params.get("budget"))
    else:
        assert 12 <= K <= 32
    # every base token sits in exactly one plan row, that of its map entry, with weight 1/|cluster|
    assert torch.equal(torch.sort(r.src).values, torch.arange(Tb * Hb * Wb))
    row = contract.row_of_entries(r)
    assert torch.equal(m.reshape(-1)[r.src].long(), row)
    sizes = torch.bincount(m.reshape(-1).long(), minlength=K)
    torch.testing.assert_close(r.weight, 1.0 / sizes[row].float())
    # tokens = raw member means (Eq. 4); codebook = mean of the members' unit vectors
    feats = contract.base_features(r, x, (H, W))
    for j in (0, K - 1):
        members = feats[m.reshape(-1) == j]
        torch.testing.assert_close(r.tokens[j], members.mean(0))
        torch.testing.assert_close(book[j], torch.nn.functional.normalize(members, dim=1).mean(0))
    out = r.apply(feats, torch.zeros(C))
    torch.testing.assert_close(out[r.kind == KIND_VISUAL], r.tokens[r.kind == KIND_VISUAL])


@pytest.mark.parametrize("budget", [1, 5, 17, 40])
def test_budget_gives_exactly_that_many_tokens(budget):
    x = contract.smooth_video(2, 6, 5, 4, seed=1)
    r = VQToken(budget=budget)(x, (6, 5))
    assert r.n_visual() == budget and r.n_llm_tokens == budget + 1
    assert TokenDynamics(budget=budget)(x, (6, 5)).n_visual() == budget


def test_fewer_tokens_than_k_gives_singletons():
    """K is clipped to the token count N; an adaptive range with < 3 Ks left (no second difference)
    gives K = min(k_min, N)."""
    x = contract.smooth_video(2, 4, 1, 6, seed=2)  # 8 tokens < k_min = 12
    for r in (VQToken()(x, (4, 1)), VQToken(budget=30)(x, (4, 1)), VQToken(k=9)(x, (4, 1))):
        assert r.n_visual() == 8
        assert torch.equal(r.tokens[:-1], x.reshape(8, 6)) and torch.equal(r.src, torch.arange(8))
    assert VQToken(k_min=7, k_max=9)(x, (4, 1)).n_visual() == 7  # Ks 7, 8 only
    assert VQToken(k_min=6, k_max=9)(x, (4, 1)).n_visual() == 7  # Ks 6, 7, 8: the elbow is the middle


def test_both_reducers_cluster_identically_and_planted_video():
    x, truth = planted(16, 2 * 240, seed=5)
    x = x.reshape(2, 240, 16)
    a, b = VQToken()(x, (12, 20)), TokenDynamics()(x, (12, 20))
    assert torch.equal(a.extras["index_map"], b.extras["dynamics_map"])
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.extras["codebook"], b.extras["token_base"])
    assert a.n_visual() == 16 and same_partition(a.extras["index_map"].reshape(-1).long(), truth)


def test_params_and_cli_strings():
    assert get_reducer("vqtoken", k="None", budget="none") == VQToken()
    assert get_reducer("vqtoken", k="7").k == 7
    for bad in [
        {"adaptive": "silhouette"},
        {"grid": "hex"},
        {"k": 0},
        {"k_min": 5, "k_max": 4},
        {"k": 3, "budget": 4},
    ]:
        with pytest.raises(ValueError):
            get_reducer("tokendynamics", **bad)
    assert VQToken.info.budget and VQToken.info.training and TokenDynamics.info.budget


# --------------------------------------------------------------------------------------------------
# the shared contract (also run by tests/test_reducers.py once the package imports these modules)


@pytest.mark.parametrize(
    "cfg", [(n, {}) for n, _, _ in METHODS] + [("vqtoken", {"adaptive": "drop", "grid": "pooled"})]
)
@pytest.mark.parametrize("T,grid", contract.SHAPES)
def test_contract_defaults(cfg, T, grid):
    contract.test_contract(cfg, T, grid)


@pytest.mark.parametrize("name", [n for n, _, _ in METHODS])
def test_float16_and_bad_input(name):
    contract.test_float16_input_is_computed_in_float32((name, {}))
    contract.test_bad_input_is_refused(name)
    contract.test_reducer_config_round_trips((name, {}))
