"""Gradient clipping (plain and FSDP2-sharded), z-loss, and the outlier detector."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from olmo_nn.config import ConfigError
from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.train.stability import (
    ClipConfig,
    OutlierDetector,
    SkipStepConfig,
    clip_grad_norm,
    clip_threshold,
    z_loss,
)

# ------------------------------------------------------------------------------- clipping


def test_clip_threshold_is_looser_early() -> None:
    olmo_7b = ClipConfig(max_grad_norm=1.0, early_max_grad_norm=10.0, early_steps=1000)
    assert clip_threshold(1, olmo_7b) == 10.0
    assert clip_threshold(1000, olmo_7b) == 10.0
    assert clip_threshold(1001, olmo_7b) == 1.0
    assert clip_threshold(1, ClipConfig()) == 1.0
    assert clip_threshold(1, ClipConfig(max_grad_norm=None)) is None


def test_clip_config_validation() -> None:
    for bad, field in (
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"early_max_grad_norm": -1.0}, "early_max_grad_norm"),
        ({"early_steps": -1}, "early_steps"),
    ):
        with pytest.raises(ConfigError, match=field):
            ClipConfig.from_dict(bad)


def norm_by_hand(params: Iterable[torch.Tensor]) -> float:
    """The global L2 norm of the gradients, summed in float64 outside the code under test."""
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None))


def params_with_grads() -> list[nn.Parameter]:
    # Gradients [3, 4] and [[12]] and none: global norm sqrt(9 + 16 + 144) = 13.
    a, b, c = (nn.Parameter(torch.zeros(shape)) for shape in ((2,), (1, 1), (3,)))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([[12.0]])
    return [a, b, c]


def test_clip_grad_norm_clips_like_torch() -> None:
    ours, reference = params_with_grads(), params_with_grads()
    norm = clip_grad_norm(ours, max_norm=1.0)
    expected = torch.nn.utils.clip_grad_norm_(reference, max_norm=1.0)
    assert type(norm) is torch.Tensor
    assert norm.item() == pytest.approx(13.0)
    torch.testing.assert_close(norm, expected)
    for p, q in zip(ours, reference, strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    # Scaled by 1 / (13 + 1e-6): [3/13, 4/13] and [[12/13]], a unit vector.
    torch.testing.assert_close(ours[0].grad, torch.tensor([3 / 13, 4 / 13]))
    assert norm_by_hand(ours) <= 1.0  # the bound holds, not just approximately
    assert clip_grad_norm(ours, max_norm=None).item() == pytest.approx(1.0)


def test_clip_grad_norm_leaves_small_or_unclipped_grads_alone() -> None:
    for max_norm in (100.0, None):
        params = params_with_grads()
        assert clip_grad_norm(iter(params), max_norm=max_norm).item() == pytest.approx(13.0)
        torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 4.0]), rtol=0, atol=0)
    assert clip_grad_norm([nn.Parameter(torch.ones(2))], max_norm=1.0).item() == 0.0


def test_clipping_a_model_bounds_its_gradient_norm() -> None:
    torch.manual_seed(0)
    model = OLMo(tiny_config())
    ids = torch.arange(16).view(2, 8) * 7 % 100
    model(ids).float().logsumexp(-1).mean().backward()
    before = norm_by_hand(model.parameters())
    unclipped = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    bound = 0.25
    assert before > 2 * bound  # clipping has to act
    reported = clip_grad_norm(model.parameters(), max_norm=bound)
    assert reported.item() == pytest.approx(before, rel=1e-6)  # the norm before clipping
    after = norm_by_hand(model.parameters())
    assert after <= bound
    assert after == pytest.approx(bound, rel=1e-5)  # scaled down to the bound, not below it
    clipped = [p.grad for p in model.parameters() if p.grad is not None]
    for g, g0 in zip(clipped, unclipped, strict=True):  # one common factor: directions kept
        torch.testing.assert_close(g, g0 * (bound / before), rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------------- z-loss


def test_z_loss_by_hand() -> None:
    # Position 1: logsumexp(0, 0, 0, 0) = ln 4; position 2: ln(1 + 2 + 3 + 4) = ln 10.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(2), math.log(3), math.log(4)]]])
    ln4_sq, ln10_sq = 1.9218120556728056, 5.301898110478399
    assert z_loss(logits).item() == pytest.approx((ln4_sq + ln10_sq) / 2)
    assert z_loss(logits, torch.tensor([[True, False]])).item() == pytest.approx(ln4_sq)
    assert z_loss(logits, torch.tensor([[0, 1]])).item() == pytest.approx(ln10_sq)
    assert z_loss(logits, torch.tensor([[False, False]])).item() == 0.0


def test_z_loss_is_fp32_and_differentiable() -> None:
    logits = torch.full((2, 3, 8), 30.0, dtype=torch.bfloat16, requires_grad=True)
    loss = z_loss(logits)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((30.0 + math.log(8)) ** 2, rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="mask shape"):
        z_loss(logits, torch.ones(2, 3, 8))


# --------------------------------------------------------------------- outlier detection


def noisy_detector(seed: int = 0) -> OutlierDetector:
    generator = torch.Generator().manual_seed(seed)
    detector = OutlierDetector(window=128, sigma=6.0)
    for value in (3.0 + 0.1 * torch.randn(128, generator=generator, dtype=torch.float64)).tolist():
        detector.update(value)
    return detector


def test_flags_a_10_sigma_spike_but_not_noise() -> None:
    detector = noisy_detector()
    assert detector.is_outlier(3.0 + 10 * 0.1)
    assert detector.is_outlier(3.0 - 10 * 0.1)
    generator = torch.Generator().manual_seed(1)
    fresh = (3.0 + 0.1 * torch.randn(1000, generator=generator, dtype=torch.float64)).tolist()
    assert not any(detector.is_outlier(v) for v in fresh)


def test_threshold_by_hand() -> None:
    # Values 1 and 3: mean 2, sample std sqrt(2) = 1.41421; 2 sigma = 2.82843 from the mean.
    detector = OutlierDetector(window=4, sigma=2.0, min_values=2)
    detector.update(1.0)
    assert not detector.is_outlier(100.0)  # one value is too few to judge
    detector.update(3.0)
    assert not detector.is_outlier(4.82)
    assert detector.is_outlier(4.83)
    assert detector.is_outlier(-0.83)
    for value in (5.0, 7.0, 9.0):  # the window keeps the last 4: 3, 5, 7, 9
        detector.update(value)
    assert detector.state_dict() == {"values": [3.0, 5.0, 7.0, 9.0]}


def test_non_finite_values() -> None:
    detector = OutlierDetector()
    for value in (math.nan, math.inf, -math.inf):
        assert detector.is_outlier(value)  # even with an empty window
        detector.update(value)
    assert len(detector) == 0
    assert noisy_detector().is_outlier(math.nan)


def test_waits_for_min_values() -> None:
    detector = OutlierDetector(window=128, sigma=6.0)  # min_values = 20
    for i in range(19):
        detector.update(1.0 + 0.001 * (i % 2))
    assert not detector.is_outlier(1000.0)
    detector.update(1.0)
    assert detector.is_outlier(1000.0)


def test_state_dict_round_trip() -> None:
    original = noisy_detector()
    state = json.loads(json.dumps(original.state_dict()))  # plain data
    restored = OutlierDetector(window=128, sigma=6.0)
    restored.load_state_dict(state)
    probes = [3.0, 3.5, 3.6, 3.7, 4.0, 2.4, math.inf]
    assert [restored.is_outlier(v) for v in probes] == [original.is_outlier(v) for v in probes]
    for detector in (original, restored):
        detector.update(3.3)
    assert restored.state_dict() == original.state_dict()
    smaller = OutlierDetector(window=4, min_values=2)
    smaller.load_state_dict(state)
    assert smaller.state_dict()["values"] == state["values"][-4:]


class FloatReference:
    """The detector as the trainer ran it on Python floats before it moved to the device:
    exact sums (math.fsum), the sample std, ``|v - mean| > sigma * std``."""

    def __init__(self, window: int, sigma: float, min_values: int) -> None:
        self.window, self.sigma, self.min_values = window, sigma, min_values
        self.values: list[float] = []

    def is_outlier(self, value: float) -> bool:
        if not math.isfinite(value):
            return True
        if len(self.values) < self.min_values:
            return False
        mean = math.fsum(self.values) / len(self.values)
        variance = math.fsum((v - mean) ** 2 for v in self.values) / (len(self.values) - 1)
        return abs(value - mean) > self.sigma * math.sqrt(variance)

    def update(self, value: float) -> None:
        if math.isfinite(value):
            self.values = [*self.values, value][-self.window :]


def spiky_float32_series(seed: int, length: int) -> list[float]:
    """Loss-like float32 values: noise, a level change, spikes of 2-30 sigma, NaN and inf."""
    generator = torch.Generator().manual_seed(seed)
    level = torch.where(torch.arange(length) < length // 2, 3.0, 2.5)
    values = level + 0.05 * torch.randn(length, generator=generator)
    spikes = torch.rand(length, generator=generator) < 0.1
    size = 0.05 * (2 + 28 * torch.rand(length, generator=generator))
    values = torch.where(spikes, values + size, values).float()
    series = values.tolist()
    for index in torch.randint(0, length, (6,), generator=generator).tolist():
        series[index] = [math.nan, math.inf, -math.inf][index % 3]
    return series


@pytest.mark.parametrize(("seed", "window", "sigma"), [(0, 128, 6.0), (1, 16, 2.0), (2, 8, 1.0)])
def test_device_decisions_match_the_float_reference(seed: int, window: int, sigma: float) -> None:
    """As the trainer uses it: 0-d float32 tensors in, a 0-d bool out, recorded when finite."""
    losses = spiky_float32_series(seed, 400)
    norms = spiky_float32_series(seed + 100, 400)
    device = OutlierDetector(window=window, sigma=sigma)
    reference = FloatReference(window, sigma, min(20, window))
    flags, expected = [], []
    for loss, norm in zip(losses, norms, strict=True):
        value = torch.tensor(loss, dtype=torch.float32)
        both_finite = torch.isfinite(value) & torch.isfinite(torch.tensor(norm))
        flags.append(bool(device.flag(value)))
        device.record(value, keep=both_finite)
        expected.append(reference.is_outlier(loss))
        if math.isfinite(loss) and math.isfinite(norm):
            reference.update(loss)
    assert flags == expected
    finite_flags = [f for f, v in zip(flags, losses, strict=True) if math.isfinite(v)]
    assert 0 < sum(finite_flags) < len(finite_flags)  # the series has outliers and plain steps
    assert device.state_dict() == {"values": reference.values}  # the checkpoint format


def test_flag_and_record_never_read_the_device() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostReads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:  # item/bool/float/int
                HostReads.count += 1
            return func(*args, **(kwargs or {}))

    detector = noisy_detector()
    with HostReads():
        for value in (3.0, 30.0, math.nan):
            flag = detector.flag(torch.tensor(value))
            detector.record(torch.tensor(value), keep=~flag)
    assert HostReads.count == 0
    assert bool(flag) and len(detector) == 128  # and it did decide: NaN flagged, not recorded


def test_skip_step_config() -> None:
    detector = SkipStepConfig(enabled=True, sigma=3.0, window=16).build()
    assert (detector.window, detector.sigma, detector.min_values) == (16, 3.0, 16)
    with pytest.raises(ConfigError, match="window"):
        SkipStepConfig(window=1)
    with pytest.raises(ConfigError, match="sigma"):
        SkipStepConfig(sigma=0.0)
    with pytest.raises(ValueError, match="min_values"):
        OutlierDetector(window=8, min_values=9)


# ------------------------------------------------------------ FSDP2 (2 ranks, gloo, CPU)
WORLD_SIZE = 2
RunRanks = Callable[..., None]  # the conftest fixtures' types
FreePort = Callable[[], int]
EXTRA_GRAD = [3.0, 4.0]  # a replicated (plain-tensor) gradient of norm 5 mixed in


def tiny_config() -> TransformerConfig:
    return TransformerConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64,
                             vocab_size=100, embedding_size=128, eos_token_id=0, pad_token_id=1)  # fmt: skip


def _loss(model: nn.Module, rank: int) -> torch.Tensor:
    ids = torch.arange(16).view(2, 8) * 7 % 100 + rank  # each rank its own batch
    return model(ids).float().logsumexp(-1).mean()


def _fsdp_worker(rank: int, port: int, out_dir: str) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(0)
        model = OLMo(tiny_config().as_olmo2())
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        _loss(model, rank).backward()
        assert all(isinstance(p.grad, DTensor) for p in model.parameters())
        norm = clip_grad_norm(model.parameters(), max_norm=1e-3)
        clipped = clip_grad_norm(model.parameters(), max_norm=None)
        extra = nn.Parameter(torch.zeros(2))
        extra.grad = torch.tensor(EXTRA_GRAD)
        mixed = clip_grad_norm([*model.parameters(), extra], max_norm=None)
        results = {"norm": norm, "clipped": clipped, "mixed": mixed}
        assert all(type(value) is torch.Tensor for value in results.values())
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="needs torch.distributed")
def test_fsdp2_grad_norm_is_the_global_norm(
    tmp_path: Path, run_ranks: RunRanks, free_port: FreePort
) -> None:
    run_ranks(_fsdp_worker, WORLD_SIZE, free_port(), str(tmp_path))
    # Single process, same init: FSDP2 averages gradients, so the reference loss is the mean.
    torch.manual_seed(0)
    model = OLMo(tiny_config().as_olmo2())
    (sum(_loss(model, rank) for rank in range(WORLD_SIZE)) / WORLD_SIZE).backward()  # type: ignore[union-attr]
    expected = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])  # type: ignore[misc]
    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["norm"], expected)
        assert result["norm"].item() > 1e-3  # so clipping to 1e-3 acted
        torch.testing.assert_close(result["clipped"], torch.tensor(1e-3))
        assert result["clipped"].item() <= 1e-3
        torch.testing.assert_close(result["mixed"], (1e-6 + 25.0) ** 0.5 * torch.ones(()))
