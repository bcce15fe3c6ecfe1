"""LR schedules at hand-computed steps, set_lr, and batch-size warmup at token boundaries."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from olmo_nn.config import ConfigError
from olmo_nn.train.schedule import (
    BatchSizeWarmupConfig,
    SchedulerConfig,
    global_batch_instances_at,
    lr_at,
    set_lr,
)


def lr(step: int, *, max_steps: int = 110, peak: float = 1.0, **config: Any) -> float:
    return lr_at(step, peak_lr=peak, config=SchedulerConfig.from_dict(config), max_steps=max_steps)


# Warmup 10 updates, decay over updates 10..110 (t_max = max_steps = 110), floor 0.1.
DECAY: dict[str, Any] = {"warmup_steps": 10, "alpha_f": 0.1}


@pytest.mark.parametrize("name", ["linear", "cosine", "inverse_sqrt", "constant"])
def test_linear_warmup(name: str) -> None:
    # step s of W: s / W of the way from warmup_min_lr to the peak; the peak at update W.
    assert lr(0, name=name, **DECAY) == 0.0
    assert lr(1, name=name, **DECAY) == pytest.approx(0.1)
    assert lr(5, name=name, **DECAY) == pytest.approx(0.5)
    assert lr(10, name=name, **DECAY) == 1.0
    # From 0.1: 0.1 + (1 - 0.1) * 5/10 = 0.55.
    assert lr(5, name=name, warmup_min_lr=0.1, **DECAY) == pytest.approx(0.55)


def test_cosine() -> None:
    # progress p = (s - 10) / 100; lr = 0.1 + 0.9 * (1 + cos(pi p)) / 2.
    assert lr(35, name="cosine", **DECAY) == pytest.approx(0.8681980515)  # p = 1/4
    assert lr(60, name="cosine", **DECAY) == pytest.approx(0.55)  # midpoint: 0.1 + 0.9/2
    assert lr(110, name="cosine", **DECAY) == pytest.approx(0.1)  # t_max: the floor
    assert lr(111, name="cosine", **DECAY) == pytest.approx(0.1)
    assert lr(10_000, name="cosine", **DECAY) == pytest.approx(0.1)


def test_linear() -> None:
    # lr = 1 - 0.9 p.
    assert lr(35, name="linear", **DECAY) == pytest.approx(0.775)
    assert lr(60, name="linear", **DECAY) == pytest.approx(0.55)
    assert lr(109, name="linear", **DECAY) == pytest.approx(0.109)
    assert lr(110, name="linear", **DECAY) == pytest.approx(0.1)
    assert lr(500, name="linear", **DECAY) == pytest.approx(0.1)


def test_olmo_7b_linear_in_real_units() -> None:
    # Peak 3e-4, warmup 5000, to 3e-5 at 500k: halfway through the decay is 1.65e-4.
    config = SchedulerConfig(name="linear", warmup_steps=5000, alpha_f=0.1)
    assert lr_at(2500, peak_lr=3e-4, config=config, max_steps=500_000) == pytest.approx(1.5e-4)
    assert lr_at(252_500, peak_lr=3e-4, config=config, max_steps=500_000) == pytest.approx(1.65e-4)


def test_t_max_overrides_max_steps() -> None:
    # Decay ends at 60 although the run is 110 long: midpoint at 35.
    assert lr(35, name="linear", t_max=60, **DECAY) == pytest.approx(0.55)
    assert lr(60, name="linear", t_max=60, **DECAY) == pytest.approx(0.1)
    assert lr(100, name="linear", t_max=60, **DECAY) == pytest.approx(0.1)


def test_inverse_sqrt() -> None:
    config: dict[str, Any] = {"name": "inverse_sqrt", "warmup_steps": 100, "alpha_f": 0.1}
    assert lr(100, max_steps=10_000, **config) == 1.0
    assert lr(400, max_steps=10_000, **config) == pytest.approx(0.5)  # sqrt(100/400)
    assert lr(2500, max_steps=10_000, **config) == pytest.approx(0.2)  # sqrt(100/2500)
    assert lr(40_000, max_steps=40_000, **config) == pytest.approx(0.1)  # 0.05, floored
    # After t_max the value reached at t_max holds: sqrt(100/400) = 0.5.
    assert lr(1000, max_steps=10_000, t_max=400, **config) == pytest.approx(0.5)


def test_constant_ignores_t_max() -> None:
    assert lr(10, name="constant", **DECAY) == 1.0
    assert lr(1000, name="constant", **DECAY) == 1.0
    assert lr(5, max_steps=3, name="constant", **DECAY) == pytest.approx(0.5)


def test_linear_to_zero_after_warmup() -> None:
    config: dict[str, Any] = {"name": "linear_to_zero", "warmup_steps": 0}
    assert lr(0, max_steps=100, **config) == 1.0
    assert lr(25, max_steps=100, **config) == pytest.approx(0.75)
    assert lr(99, max_steps=100, **config) == pytest.approx(0.01)
    assert lr(100, max_steps=100, **config) == 0.0  # exactly
    assert lr(150, max_steps=100, **config) == 0.0


def test_linear_to_zero_final_anneal() -> None:
    # The paper's restart: peak until the last 1000 of 10000 updates, then linearly to 0.
    config: dict[str, Any] = {"name": "linear_to_zero", "warmup_steps": 0, "anneal_steps": 1000}
    assert lr(8999, max_steps=10_000, peak=4e-4, **config) == 4e-4
    assert lr(9000, max_steps=10_000, peak=4e-4, **config) == 4e-4
    assert lr(9001, max_steps=10_000, peak=4e-4, **config) == pytest.approx(4e-4 * 0.999)
    assert lr(9500, max_steps=10_000, peak=4e-4, **config) == pytest.approx(2e-4)
    assert lr(10_000, max_steps=10_000, peak=4e-4, **config) == 0.0


def test_schedule_errors() -> None:
    with pytest.raises(ValueError, match="step=-1"):
        lr(-1, name="cosine", **DECAY)
    with pytest.raises(ValueError, match="t_max=10 must be greater than warmup_steps=10"):
        lr(5, max_steps=10, name="cosine", **DECAY)
    with pytest.raises(ValueError, match="inside the warmup"):
        lr(5, max_steps=100, name="linear_to_zero", warmup_steps=10, anneal_steps=95)
    with pytest.raises(
        ConfigError, match=r"name: expected one of 'linear', .*, got 'warmup_cosine' \(str\)"
    ):
        SchedulerConfig.from_dict({"name": "warmup_cosine"})
    with pytest.raises(ConfigError, match="anneal_steps=10 only applies"):
        SchedulerConfig(name="cosine", anneal_steps=10)
    with pytest.raises(ConfigError, match="warmup_steps=0 with name='inverse_sqrt'"):
        SchedulerConfig(name="inverse_sqrt", warmup_steps=0)
    for bad, field in (
        ({"alpha_f": 1.5}, "alpha_f"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"t_max": 0}, "t_max"),
        ({"warmup_min_lr": -1.0}, "warmup_min_lr"),
    ):
        with pytest.raises(ConfigError, match=field):
            SchedulerConfig.from_dict(bad)


def test_every_schedule_is_continuous_at_the_ends_of_warmup_and_decay() -> None:
    for name in ("linear", "cosine", "inverse_sqrt", "constant", "linear_to_zero"):
        for boundary in (10, 110):
            before, at, after = (
                lr(s, name=name, **DECAY) for s in (boundary - 1, boundary, boundary + 1)
            )
            assert abs(at - before) <= 0.1 + 1e-12 and abs(after - at) <= 0.1 + 1e-12, name


def test_set_lr_applies_each_groups_scale() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    groups: list[dict[str, Any]] = [{"params": [a]}, {"params": [b], "lr_scale": 0.5}]
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    set_lr(optimizer, 4e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [4e-4, 2e-4]


# ---------------------------------------------------------------------- batch-size warmup
B = 100_000_000_000  # OLMo 65B doubles every 100B tokens
WARMUP_65B = BatchSizeWarmupConfig(start_instances=1024, doubling_tokens=B)


@pytest.mark.parametrize(
    ("tokens", "instances"),
    [
        (0, 1024),
        (B - 1, 1024),
        (B, 2048),  # the first doubling applies from exactly 100B tokens
        (2 * B - 1, 2048),
        (2 * B, 4096),
        (3 * B, 8192),
        (4 * B, 8192),  # capped at the global batch
        (10**15, 8192),
    ],
)
def test_batch_size_doubles_every_100b_tokens(tokens: int, instances: int) -> None:
    assert global_batch_instances_at(tokens, final_instances=8192, warmup=WARMUP_65B) == instances


def test_batch_size_without_warmup_or_doublings() -> None:
    assert global_batch_instances_at(5 * B, final_instances=2048, warmup=None) == 2048
    assert global_batch_instances_at(5 * B, final_instances=1024, warmup=WARMUP_65B) == 1024


def test_batch_size_warmup_errors() -> None:
    for final in (3072, 512, 1536):
        with pytest.raises(
            ValueError, match=f"final_instances={final} must be start_instances=1024"
        ):
            global_batch_instances_at(0, final_instances=final, warmup=WARMUP_65B)
    with pytest.raises(ConfigError, match="start_instances"):
        BatchSizeWarmupConfig(start_instances=0, doubling_tokens=B)
    with pytest.raises(ConfigError, match="doubling_tokens"):
        BatchSizeWarmupConfig(start_instances=1024, doubling_tokens=0)
