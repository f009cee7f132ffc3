"""Token reducers: each turns cached SigLIP features of one video into a `Reduction` (tokens + plan).

Importing this package registers every method (one module each); `get_reducer(name, **params)` builds one.
"""

from vtc.reducers import (  # noqa: F401  (import registers the methods)
    divprune,
    dycoke,
    dyntok,
    fastvid,
    framefusion,
    holitom,
    llava_scissor,
    none,
    pool,
    prumerge_plus,
    prune,
    prunevid,
    tokendynamics,
    tome,
    vidcom2,
    vidtome,
    visionzip,
    vqtoken,
)
from vtc.reducers.base import (
    KIND_MARKER,
    KIND_NEWLINE,
    KIND_VISUAL,
    Reducer,
    Reduction,
    interp_matrix,
    llava_pool,
)
from vtc.reducers.registry import (
    MethodInfo,
    ReducerError,
    get_reducer,
    list_reducers,
    reducer_config,
    register,
)

__all__ = [
    "KIND_MARKER",
    "KIND_NEWLINE",
    "KIND_VISUAL",
    "MethodInfo",
    "Reducer",
    "ReducerError",
    "Reduction",
    "get_reducer",
    "interp_matrix",
    "list_reducers",
    "llava_pool",
    "reducer_config",
    "register",
]
