"""reduction_from_groups (the builder merging/pruning reducers share) and Reduction extras."""

import numpy as np
import pytest
import torch

from vtc.reducers import KIND_NEWLINE, Reduction
from vtc.reducers.base import reduction_from_groups


def test_groups_weighted_means_order_and_positions():
    f = torch.tensor([[0.0], [2.0], [10.0], [4.0], [7.0], [1.0]])  # base grid (1, 2, 3)
    group = torch.tensor([1, 1, -1, 0, 0, 2])
    weight = torch.tensor([1.0, 3.0, 9.0, 2.0, 2.0, 5.0])
    r = reduction_from_groups(f, group, weight, "native", (1, 2, 3), 6)
    # group 0 = {3, 4} equal weights; group 1 = {0, 1} weights 1:3; group 2 = {5}; index 2 dropped
    torch.testing.assert_close(r.tokens[:3, 0], torch.tensor([5.5, 1.5, 1.0]))
    assert r.indptr.tolist() == [0, 2, 4, 5, 5]
    assert r.src.tolist() == [3, 4, 0, 1, 5]
    torch.testing.assert_close(r.weight, torch.tensor([0.5, 0.5, 0.25, 0.75, 1.0]))
    # pos = largest-weight source; tie -> first: (0,1,0) for {3,4}, (0,0,1) for {0,1}
    assert r.pos[:3].tolist() == [[0, 1, 0], [0, 0, 1], [0, 1, 2]]
    assert r.kind.tolist() == [0, 0, 0, KIND_NEWLINE]
    torch.testing.assert_close(r.apply(f, torch.tensor([9.0]))[:, 0], torch.tensor([5.5, 1.5, 1.0, 9.0]))


def test_gaps_and_shapes_are_refused():
    f = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="no gaps"):
        reduction_from_groups(f, torch.tensor([0, 2, 2]), torch.ones(3), "native", (1, 1, 3), 3)
    with pytest.raises(ValueError, match="must be"):
        reduction_from_groups(f, torch.tensor([0, 0]), torch.ones(3), "native", (1, 1, 3), 3)


def test_extras_round_trip_through_arrays():
    f = torch.randn(4, 3)
    m = torch.tensor([[[0, 1], [1, 0]]])
    r = reduction_from_groups(
        f, torch.tensor([0, 1, 1, 0]), torch.ones(4), "native", (1, 2, 2), 4, {"index_map": m}
    )
    arrays = r.to_arrays()
    assert "extra_index_map" in arrays
    back = Reduction.from_arrays({k: np.asarray(v) for k, v in arrays.items()}, "native", (1, 2, 2), 4)
    assert torch.equal(back.extras["index_map"], m)
    torch.testing.assert_close(back.tokens, r.tokens)


def test_relabel_by_first_orders_groups_by_smallest_member():
    from vtc.reducers.base import relabel_by_first

    labels = torch.tensor([7, 2, -1, 7, 5, 2, 5])  # first members: 7 -> 0, 2 -> 1, 5 -> 4; 0,1,3,4,6 unused
    group, order = relabel_by_first(labels)
    assert group.tolist() == [0, 1, -1, 0, 2, 1, 2]
    assert order.tolist() == [7, 2, 5]
    group, order = relabel_by_first(torch.tensor([-1, -1]))
    assert group.tolist() == [-1, -1] and order.numel() == 0


def test_register_refuses_an_incomplete_reducer():
    """A method is one file: `register` checks at import that it is a Reducer with a way to reduce and a
    FLOPs formula (vtc compress records every video's module FLOPs), and that closed sets are checked."""
    from dataclasses import dataclass
    from typing import Literal

    import pytest

    from vtc.reducers.base import Reducer
    from vtc.reducers.registry import register

    @dataclass(frozen=True)
    class NoFlops(Reducer):
        def __call__(self, x, grid):
            raise AssertionError

    @dataclass(frozen=True)
    class NoReduce(Reducer):
        def decision_flops(self, red, C):
            return 0.0

    @dataclass(frozen=True)
    class NotAReducer:
        def __call__(self, x, grid):
            raise AssertionError

    for cls, match in ((NoFlops, "no decision_flops"), (NoReduce, "neither __call__ nor batch"),
                       (NotAReducer, "deriving from Reducer")):  # fmt: skip
        with pytest.raises(TypeError, match=match):
            register(f"test-{cls.__name__}")(cls)

    @dataclass(frozen=True)
    class Closed(Reducer):
        mode: Literal["a", "b"] = "a"

    assert Closed(mode="b").mode == "b"
    with pytest.raises(ValueError, match="unknown mode 'c'; valid: a, b"):
        Closed(mode="c")
