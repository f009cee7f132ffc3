"""Straightforward loop version of the official VQToken adaptive k-means (`VQToken/cluster.py`), in numpy.

For the speed benchmark and the tests of `vtc.reducers.kmeans`: a Python loop over K = k_min..k_max, a
plain cold k-means++ / Lloyd fit per K (per-cluster loop for the centroid update, as the official
`update_centroids`), distortion ((X - C[labels])**2).sum() per K, the elbow, then a fresh fit at the chosen
K: 22 fits for 12..32, as the official. Tokens are L2-normalised first (`vq_token.py`).
`official_offset=True` reproduces the official index bug (K = argmax(d2) + 4, floored at 12);
the default applies the fix (K = k_min + 1 + argmax(d2)). Seeded (numpy Generator), unlike the official.
Differences kept small on purpose: convergence when the centroids move less than tol (official), and an
empty cluster keeps its previous centroid (official).
"""

from __future__ import annotations

import numpy as np


def kmeans_plain(X: np.ndarray, k: int, rng: np.random.Generator, max_iter: int = 100, tol: float = 1e-4):
    """Cold k-means++ then Lloyd on rows of X (already unit): (labels [N], centroids [k, C])."""
    n = X.shape[0]
    cents = [X[rng.integers(n)]]
    d2 = ((X - cents[0]) ** 2).sum(1)  # squared distance to the nearest centroid so far
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        cents.append(X[rng.choice(n, p=p)])
        d2 = np.minimum(d2, ((X - cents[-1]) ** 2).sum(1))
    C = np.stack(cents)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(max_iter):
        Cn = C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
        labels = np.argmax(X @ Cn.T, axis=1)  # cosine: 1 - x.c is smallest where x.c is largest
        new = np.stack([X[labels == j].mean(0) if (labels == j).any() else C[j] for j in range(k)])
        done = np.linalg.norm(C - new) < tol
        C = new
        if done:
            break
    return labels, C


def elbow_loop(
    x,
    k_min: int = 12,
    k_max: int = 32,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-4,
    official_offset: bool = False,
):
    """x [N, C] (numpy or torch) -> (K, labels, centroids, distortions)."""
    X = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    distortions = []
    for k in range(k_min, k_max + 1):
        labels, C = kmeans_plain(X, k, rng, max_iter, tol)
        distortions.append(float(((X - C[labels]) ** 2).sum()))
    d = np.asarray(distortions)
    d2 = (d[2:] - d[1:-1]) - (d[1:-1] - d[:-2])
    if official_offset:
        best = max(int(np.argmax(d2)) + 2 + 2, 12)
    else:
        best = k_min + 1 + int(np.argmax(d2))
    labels, C = kmeans_plain(X, best, rng, max_iter, tol)
    return best, labels, C, distortions
