"""`vqtoken`: VQToken (arXiv 2503.16980, §3.2), a video as K cluster centroids of all its tokens."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtc.reducers.base import Reduction
from vtc.reducers.kmeans import CLUSTER_PARAMS, ClusterReducer
from vtc.reducers.registry import register


@register(
    "vqtoken",
    paper="VQToken: Neural Discrete Token Representation Learning for Extreme Token Reduction in "
    "Video Large Language Models (arXiv 2503.16980 v4+)",
    section="§3.1-3.2, Eq. 3-5",
    summary="cluster all tokens into K centroids",
    adaptive=True,
    training=True,
    budget=True,
    params=CLUSTER_PARAMS,
)
@dataclass(frozen=True)
class VQToken(ClusterReducer):
    """Cluster all T*H*W tokens (cosine k-means++, Eq. 3) into K; the K centroids + one newline.

    Eq. 4, codebook: b_k = 1/|s_k| sum_{i in s_k} t_i. Eq. 5, token hash / index map:
    M[f, h, w] = c_i with i = f*H*W + h*W + w. Eq. 6-7, VQ-Attention: M~ = MLP(Flatten(M)) [K, D],
    B' = MultiHeadAttn(Q = B W_Q, K = B W_K, V = M~ W_V) -- the `vq-attn` adapter (vtc train). Without
    it the LLM sees the K centroids + newline, which is what the official HEAD runs by default.

    Tokens: the plan gives each member weight 1/|s_k|, so a token is Eq. 4 on the raw (un-normalised)
    features, and in the LLM space the mean of the projected members. k-means itself runs on unit
    vectors (official code); its centroid, the mean of the members' unit vectors, differs from the raw
    mean in scale and, when member norms differ, slightly in direction: it is stored as
    extras["codebook"] float32 [K, C] (rows in output order). extras["index_map"] int32 [T, Hb, Wb] is
    M with 0-based ids of the *output* tokens (paper: 1..K). Visual tokens are ordered by the raster
    position of each cluster's first token (its pos). K: `budget` (fixed-length subtask) or `k`, else
    adaptive ("elbow": official rule, offset fixed; "drop": cheaper stop rule), clipped to the token
    count. Native grid by default (official: no 2x2 pooling, 729 tokens/frame).

    Official code differences: k-means++ init is unseeded (here: `seed`); the fixed-K path calls
    KMeansTorch(n_clusters=, max_iter=), argument names it does not have (here: works); the silhouette
    path scores a K-independent quantity and always returns 12 (not offered); the elbow drops the
    k_min/centre offset (K = argmax + 4, floored at 12; here K = k_min + 1 + argmax, see `elbow_k`).
    """

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        return self._cluster(x, grid, "index_map", "codebook")
