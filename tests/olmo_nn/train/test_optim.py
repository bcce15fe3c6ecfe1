"""AdamW parameter groups (OLMo 1's decay split) and hyperparameters, also on FSDP2 shards."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from olmo_nn.config import ConfigError
from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.train.optim import OptimConfig, build_optimizer, param_group_names, step_unless


def tiny_config() -> TransformerConfig:
    return TransformerConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64,
                             vocab_size=100, embedding_size=128, eos_token_id=0, pad_token_id=1)  # fmt: skip


# Sorted by name: "att_proj" < "attn_out" ('_' < 'n'), "ff_out" < "ff_proj".
BLOCK_MATRICES = [
    f"blocks.{i}.{name}.weight" for i in (0, 1) for name in ("att_proj", "attn_out", "ff_out", "ff_proj")
]  # fmt: skip
OLMO2_NORMS = [
    f"blocks.{i}.{name}.weight" for i in (0, 1) for name in ("attn_norm", "ff_norm", "k_norm", "q_norm")
]  # fmt: skip


def test_untied_olmo1_groups() -> None:
    # OLMo 1's LayerNorm has no parameters, so only the embedding escapes decay.
    model = OLMo(tiny_config())
    assert param_group_names(model, OptimConfig()) == {
        "decay": [*BLOCK_MATRICES, "lm_head.weight"],
        "no_decay": ["embeddings.weight"],
    }


def test_tied_olmo1_groups() -> None:
    # The tied embedding is also the output projection; it is listed once, undecayed.
    model = OLMo(tiny_config().replace(weight_tying=True))
    assert param_group_names(model, OptimConfig()) == {
        "decay": BLOCK_MATRICES,
        "no_decay": ["embeddings.weight"],
    }
    decayed = param_group_names(model, OptimConfig(decay_embeddings=True))
    assert decayed == {"decay": sorted([*BLOCK_MATRICES, "embeddings.weight"])}


def test_olmo2_norm_weights_are_not_decayed() -> None:
    model = OLMo(tiny_config().as_olmo2())
    assert param_group_names(model, OptimConfig()) == {
        "decay": [*BLOCK_MATRICES, "lm_head.weight"],
        "no_decay": [*OLMO2_NORMS, "embeddings.weight", "final_norm.weight"],
    }
    with_norms = param_group_names(model, OptimConfig(decay_norm_and_bias=True))
    assert with_norms == {
        "decay": sorted([*BLOCK_MATRICES, *OLMO2_NORMS, "final_norm.weight", "lm_head.weight"]),
        "no_decay": ["embeddings.weight"],
    }


def test_biases_and_frozen_parameters() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    model[1].weight.requires_grad_(False)
    assert param_group_names(model, OptimConfig()) == {
        "decay": ["0.weight"],
        "no_decay": ["0.bias", "1.bias"],
    }


def test_adamw_hyperparameters_and_group_dicts() -> None:
    model = OLMo(tiny_config())
    config = OptimConfig(lr=3e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "no_decay"]
    names = dict(model.named_parameters())
    expected = param_group_names(model, config)
    for group in optimizer.param_groups:
        assert [id(p) for p in group["params"]] == [id(names[n]) for n in expected[group["name"]]]
        assert group["lr"] == 3e-4
        assert group["initial_lr"] == 3e-4
        assert group["betas"] == (0.9, 0.95)
        assert group["eps"] == 1e-5
        assert group["fused"] is True  # on CPU too: only the fused kernel skips on the device
        assert not group["foreach"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_foreach_on_request() -> None:
    optimizer = build_optimizer(OLMo(tiny_config()), OptimConfig(fused=False))
    assert all(g["foreach"] and not g["fused"] for g in optimizer.param_groups)


def _trained_copy(fused: bool, steps: list[bool]) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A model and its optimizer after one ``step_unless`` per entry of ``steps`` (True: skip),
    each on fresh gradients (the same ones for the same step index, skipped or not)."""
    torch.manual_seed(0)
    model = OLMo(tiny_config())
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2, fused=fused))
    for index, skip in enumerate(steps):
        torch.manual_seed(100 + index)
        ids = torch.randint(0, 100, (2, 8))
        model(ids).float().logsumexp(-1).mean().backward()
        step_unless(optimizer, torch.tensor(skip))
        optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {f"param/{n}": p.detach().clone() for n, p in model.named_parameters()}
    for index, param in enumerate(model.parameters()):
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"state/{index}/{key}"] = value.detach().clone()
    return tensors


@pytest.mark.parametrize("fused", [True, False])
def test_a_skipped_step_changes_nothing_and_a_taken_one_is_a_plain_step(fused: bool) -> None:
    model, optimizer = _trained_copy(fused, [False, False])
    before = _state(model, optimizer)
    torch.manual_seed(7)
    model(torch.randint(0, 100, (2, 8))).float().logsumexp(-1).mean().backward()
    step_unless(optimizer, torch.tensor(True))
    after = _state(model, optimizer)
    assert before.keys() == after.keys() and len(after) > 2 * len(list(model.parameters()))
    for key, tensor in before.items():  # params, moments and step counts: bit for bit
        assert torch.equal(after[key], tensor), key
    assert not hasattr(optimizer, "found_inf")  # nothing left behind for the next step
    # Skipping step 2 of 3 ends where two plain steps on gradients 1 and 3 end.
    skipped, _ = _trained_copy(fused, [False, True, False])
    torch.manual_seed(0)
    plain = OLMo(tiny_config())
    reference = build_optimizer(plain, OptimConfig(lr=1e-2, fused=fused))
    for index in (0, 2):
        torch.manual_seed(100 + index)
        plain(torch.randint(0, 100, (2, 8))).float().logsumexp(-1).mean().backward()
        reference.step()
        reference.zero_grad(set_to_none=True)
    for (name, a), b in zip(skipped.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b), name
    taken, _ = _trained_copy(fused, [False, False, False])
    assert any(
        not torch.equal(a, b) for a, b in zip(taken.parameters(), plain.parameters(), strict=True)
    )


def test_a_skipped_first_step_leaves_the_weights_and_a_zero_state() -> None:
    torch.manual_seed(0)
    initial = [p.detach().clone() for p in OLMo(tiny_config()).parameters()]
    skipped_first, optimizer = _trained_copy(True, [True])
    assert all(torch.equal(a, b) for a, b in zip(skipped_first.parameters(), initial, strict=True))
    assert all(float(state["step"]) == 0.0 for state in optimizer.state.values())
    # The state it made is the one a first real step starts from: the runs continue alike.
    later, _ = _trained_copy(True, [True, False])
    torch.manual_seed(0)
    plain = OLMo(tiny_config())
    reference = build_optimizer(plain, OptimConfig(lr=1e-2, fused=True))
    torch.manual_seed(101)
    plain(torch.randint(0, 100, (2, 8))).float().logsumexp(-1).mean().backward()
    reference.step()
    assert all(
        torch.equal(a, b) for a, b in zip(later.parameters(), plain.parameters(), strict=True)
    )


def test_weight_decay_reaches_only_the_decay_group() -> None:
    # With zero gradients Adam's moment term is 0/(0 + eps) = 0, so one AdamW step is pure
    # decoupled decay: p <- p * (1 - lr * wd) = p * (1 - 0.5 * 0.1) = 0.95 p.
    model = OLMo(tiny_config())
    optimizer = build_optimizer(model, OptimConfig(lr=0.5, weight_decay=0.1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(
        after["blocks.0.ff_out.weight"], before["blocks.0.ff_out.weight"] * 0.95
    )
    torch.testing.assert_close(after["lm_head.weight"], before["lm_head.weight"] * 0.95)
    torch.testing.assert_close(
        after["embeddings.weight"], before["embeddings.weight"], rtol=0, atol=0
    )


def test_config_validation_and_yaml_round_trip() -> None:
    config = OptimConfig.from_dict({"betas": [0.9, 0.99], "lr": 1})
    assert config.betas == (0.9, 0.99) and config.lr == 1.0
    assert OptimConfig.from_yaml(config.to_yaml()) == config
    for bad, field in (
        ({"lr": 0.0}, "lr"),
        ({"betas": [0.9, 1.0]}, r"betas\[1\]"),
        ({"betas": [0.9]}, "betas"),
        ({"betas": 0.9}, "betas"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ):
        with pytest.raises(ConfigError, match=field):
            OptimConfig.from_dict(bad)


def test_no_trainable_parameters() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, OptimConfig())


# ------------------------------------------------------------------ FSDP2 (2 ranks, gloo, CPU)
WORLD_SIZE = 2
RunRanks = Callable[..., None]  # the conftest fixtures' types
FreePort = Callable[[], int]


def _batch(rank: int) -> torch.Tensor:
    return torch.arange(16).view(2, 8) * 3 % 100 + rank


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
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
        optimizer = build_optimizer(model, OptimConfig(lr=1e-2))
        _loss(model, _batch(rank)).backward()
        optimizer.step()
        full = {}
        for name, param in model.named_parameters():
            assert isinstance(param, DTensor)
            full[name] = param.full_tensor()
        # A skipped step on the sharded parameters (the fused kernel on DTensors) is a no-op.
        _loss(model, _batch(rank + 1)).backward()
        step_unless(optimizer, torch.tensor(True))
        for name, param in model.named_parameters():
            assert isinstance(param, DTensor) and torch.equal(param.full_tensor(), full[name]), name
        assert all(float(state["step"]) == 1.0 for state in optimizer.state.values())
        names = param_group_names(model, OptimConfig())
        torch.save({"params": full, "names": names}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="needs torch.distributed")
def test_fsdp2_sharded_parameters(tmp_path: Path, run_ranks: RunRanks, free_port: FreePort) -> None:
    run_ranks(_fsdp_worker, WORLD_SIZE, free_port(), str(tmp_path))
    # Reference: one process, same init, the ranks' mean loss (FSDP2 averages gradients).
    torch.manual_seed(0)
    model = OLMo(tiny_config().as_olmo2())
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2))
    loss = sum(_loss(model, _batch(rank)) for rank in range(WORLD_SIZE)) / WORLD_SIZE
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    optimizer.step()
    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["names"] == param_group_names(model, OptimConfig())
        for name, param in model.named_parameters():
            torch.testing.assert_close(result["params"][name], param.detach())
