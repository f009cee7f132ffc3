"""`dycoke` against the official DyCoke code (KD-TAO/DyCoke, `dycole_ttm` in llava/model/llava_arch.py at
commit 26dc6f4f): tests/data/dycoke_official.json holds which positions of each frame that function kept,
run unchanged on 48 seeded inputs (its provenance and the input recipe are in the file). The inputs are
float16-rounded like stored features; at low noise the frames are near-copies and many cosines lie
within 1e-7 of each other, where only the official arithmetic (normalise, then `cosine_similarity`, then
`topk`) falls the same way: computed as x.y / (|x| |y|) with a stable sort, vtc agreed on 60 of 64 inputs
at noise 0.05 and on 19 of 64 at noise 0.01."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vtc.reducers.dycoke import DyCoke

ORACLE = json.loads((Path(__file__).parent / "data" / "dycoke_official.json").read_text())
T, N, C = ORACLE["T"], ORACLE["N"], ORACLE["C"]


def inputs(seed: int, noise: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, C, generator=g)
    x = torch.stack([base + noise * torch.randn(N, C, generator=g) for _ in range(T)])
    return x.half().float()


def kept_masks(dycoke: DyCoke, x: torch.Tensor) -> list[str]:
    """Per frame, the kept positions as the fixture writes them: hex, bit n = position n."""
    red = dycoke(x, (14, 14))  # native 14x14 = 196 tokens per frame, as the official code gets them
    src = red.src.tolist()
    out = []
    for t in range(T):
        bits = sum(1 << (s - t * N) for s in src if t * N <= s < (t + 1) * N)
        out.append(hex(bits))
    return out


@pytest.mark.parametrize("noise", ["0.6", "0.05", "0.01"])
def test_dycoke_keeps_what_the_official_code_keeps(noise):
    official = DyCoke(k=ORACLE["k"], grid="native", official_offset=True)
    for seed in range(16):
        expect = ORACLE["kept"][f"{noise}/{seed}"]
        assert kept_masks(official, inputs(seed, float(noise))) == expect, (noise, seed)


def test_without_the_offset_pass_one_uses_its_own_pair():
    """official_offset=False (the default) reads pair j's similarities for pair j, as the paper does; the
    commit above reads pair j-1's (`similarities[(i - 2) // 2]`): the two differ on pass-1 frames only."""
    x = inputs(0, 0.6)
    paper = kept_masks(DyCoke(k=ORACLE["k"], grid="native"), x)
    expect = ORACLE["kept"]["0.6/0"]
    differ = [t for t in range(T) if paper[t] != expect[t]]
    assert differ and all(t % 2 == 1 for t in differ), differ
