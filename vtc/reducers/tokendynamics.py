"""`tokendynamics`: Token Dynamics (arXiv 2503.16980 v1-v3), a token base of K cluster centroids + a token dynamics map."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vtc.reducers.base import Reduction
from vtc.reducers.kmeans import CLUSTER_PARAMS, ClusterReducer
from vtc.reducers.registry import register


@register(
    "tokendynamics",
    paper="Token Dynamics: Towards Efficient and Dynamic Video Token Representation for Video Large "
    "Language Models (arXiv 2503.16980 v1-v3)",
    section="abstract only; the pieces as in VQToken Eq. 3-5",
    summary="token base + dynamics map (k-means)",
    adaptive=True,
    training=True,
    budget=True,
    params=CLUSTER_PARAMS,
)
@dataclass(frozen=True)
class TokenDynamics(ClusterReducer):
    """Disentangle a video into a token base (K cluster centroids of all T*H*W tokens, object-level
    content) and a token dynamics map (grid-level: which base token every (t, h, w) cell holds, so the
    cells' index changes across frames trace the motion); output the K base tokens + one newline.

    The Token Dynamics paper is an abstract only; the pieces follow the authors' later VQToken (Eq. 3-5),
    which names the same things codebook / index map, and its official code. The cross-dynamics attention
    that folds the map into the base without adding tokens is the `cross-dynamics` adapter (vtc train).
    extras["dynamics_map"] int32 [T, Hb, Wb]: 0-based output-token ids; extras["token_base"] float32
    [K, C]: the mean of the members' unit vectors (what k-means sees); the output tokens are the raw means
    (plan weights 1/|cluster|). Same K rules, parameters and clustering as `vqtoken`.
    """

    def __call__(self, x: Tensor, grid: tuple[int, int]) -> Reduction:  # x: [T, H*W, C]
        return self._cluster(x, grid, "dynamics_map", "token_base")
