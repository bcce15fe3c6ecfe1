"""The trainer builds its model on the meta device and each rank initializes only its own
shards: gathered, the weights equal the old seeded init (or ``init_from``'s) exactly, at world
sizes 1, 2 and 3 (3 cuts uneven shards: the dims below are not multiples of 3)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file

from olmo_nn.checkpoint import save_checkpoint
from olmo_nn.model import OLMo, TransformerConfig
from olmo_nn.parallel import DistributedContext, apply_fsdp, join_one_rank_group
from olmo_nn.train.config import TrainConfig
from olmo_nn.train.trainer import Trainer

REPO = Path(__file__).parents[3]
SAMPLE = REPO / "data" / "sample"
SEED = 1234
RunRanks = Callable[..., None]  # the conftest fixtures' types
FreePort = Callable[[], int]

#: d_model 32 and hidden 64 leave uneven shards at world size 3 (32 and 128 rows); OLMo 2's
#: block adds norm weights (sharded too) and an untied output layer.
MODEL = {"d_model": 32, "n_heads": 2, "n_layers": 2, "mlp_hidden_size": 64,
         "max_sequence_length": 64, "norm_type": "rmsnorm", "norm_affine": True,
         "qk_norm": True, "norm_placement": "post", "weight_tying": False}  # fmt: skip


def write_config(tmp_path: Path, **changes: object) -> Path:
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["model"].update(MODEL)
    config["data"].update(paths=[str(SAMPLE / "train")], sequence_length=64, validation_paths=[])
    config.update(
        global_batch_size=6, micro_batch_size=1, seed=SEED, mlflow=False, device="cpu", **changes
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def old_init(config: TransformerConfig) -> dict[str, torch.Tensor]:
    """The weights as the trainer made them before: built on CPU, then seeded init."""
    model = OLMo(config)
    model.init_weights(seed=SEED)
    return model.state_dict()


def gathered(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return dict(get_model_state_dict(model, options=options))  # type: ignore[arg-type]


def _trainer_worker(rank: int, world_size: int, port: int, config: str, out: str) -> None:
    """One rank of ``olmo train``: build the trainer's model, save the gathered weights."""
    from olmo_nn.parallel import init_distributed

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))  # fmt: skip
    ctx = init_distributed("cpu")
    try:
        trainer = Trainer(TrainConfig.load(Path(config)), Path(out) / "run", ctx=ctx)
        from torch.distributed.tensor import DTensor

        params = dict(trainer.model.named_parameters())
        assert all(isinstance(p, DTensor) for p in params.values()), "not sharded"
        weights = gathered(trainer.model)
        if rank == 0:
            torch.save(weights, Path(out) / "weights.pt")
    finally:
        dist.destroy_process_group()


def assert_same(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(reference)
    for name, tensor in reference.items():
        assert torch.equal(ours[name], tensor), name


def test_single_process_build_equals_the_old_seeded_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TrainConfig.load(write_config(tmp_path))
    trainer = Trainer(
        config, tmp_path / "run", ctx=DistributedContext(0, 1, 0, torch.device("cpu"), False)
    )
    assert not dist.is_initialized()  # a single CPU process joins no group and is not sharded
    assert_same(trainer.model.state_dict(), old_init(trainer.config.model))
    # The attention kernel is logged once at start (CPU: torch's own flash kernel).
    assert capsys.readouterr().out == "attention: SDPA flash, fp32, causal (cpu)\n"


@pytest.mark.parametrize(
    ("world_size", "changes"),
    [(2, {}), (3, {"activation_checkpointing": True, "compile": True})],
)
def test_sharded_build_equals_the_old_seeded_init(
    world_size: int, changes: dict[str, object], tmp_path: Path, run_ranks: RunRanks,
    free_port: FreePort,
) -> None:  # fmt: skip
    config = write_config(tmp_path, **changes)
    run_ranks(_trainer_worker, world_size, world_size, free_port(), str(config), str(tmp_path))
    reference = old_init(TrainConfig.load(config).resolved().model)
    assert_same(torch.load(tmp_path / "weights.pt"), reference)


@pytest.mark.parametrize("world_size", [1, 3])
def test_sharded_build_loads_init_from(
    world_size: int, tmp_path: Path, run_ranks: RunRanks, free_port: FreePort
) -> None:
    model_config = TrainConfig.load(write_config(tmp_path)).resolved().model
    start = OLMo(model_config)
    start.init_weights(seed=99)  # other weights than the run's seed would give
    save_checkpoint(start, tmp_path / "start")
    config = write_config(tmp_path, init_from=str(tmp_path / "start"))
    expected = load_file(tmp_path / "start" / "model.safetensors")
    if world_size == 1:
        ctx = DistributedContext(0, 1, 0, torch.device("cpu"), False)
        trainer = Trainer(TrainConfig.load(config), tmp_path / "run", ctx=ctx)
        assert_same(trainer.model.state_dict(), expected)
        return
    run_ranks(_trainer_worker, world_size, world_size, free_port(), str(config), str(tmp_path))
    assert_same(torch.load(tmp_path / "weights.pt"), expected)


def test_init_from_with_other_tensors_is_refused(tmp_path: Path) -> None:
    model_config = TrainConfig.load(write_config(tmp_path)).resolved().model
    save_checkpoint(OLMo(model_config), tmp_path / "start")
    weights = tmp_path / "start" / "model.safetensors"
    tensors = load_file(weights)
    tensors["blocks.0.extra.weight"] = tensors.pop("blocks.0.ff_out.weight")
    from olmo_nn.checkpoint.unsharded import save_state_dict

    save_state_dict(tensors, model_config, tmp_path / "start", overwrite=True)
    config = TrainConfig.load(write_config(tmp_path, init_from=str(tmp_path / "start")))
    ctx = DistributedContext(0, 1, 0, torch.device("cpu"), False)
    with pytest.raises(ValueError, match=r"missing tensors \['blocks.0.ff_out.weight'\], "
                       r"unexpected tensors \['blocks.0.extra.weight'\]"):  # fmt: skip
        Trainer(config, tmp_path / "run", ctx=ctx)


def _one_rank_worker(rank: int, out: str) -> None:
    """FSDP2 in a one-process group (what a single GPU runs), here on CPU and gloo."""
    torch.set_num_threads(1)
    ctx = join_one_rank_group(DistributedContext(0, 1, 0, torch.device("cpu"), False))
    try:
        assert ctx.initialized and dist.get_world_size() == 1
        model = OLMo(TransformerConfig.from_dict(MODEL), init_device="meta")
        apply_fsdp(model)
        model.to_empty(device="cpu")
        model.init_weights(seed=SEED)
        torch.save(gathered(model), Path(out) / "weights.pt")
    finally:
        dist.destroy_process_group()


def test_fsdp_on_one_rank_equals_the_old_seeded_init(tmp_path: Path, run_ranks: RunRanks) -> None:
    run_ranks(_one_rank_worker, 1, str(tmp_path))
    assert_same(torch.load(tmp_path / "weights.pt"), old_init(TransformerConfig.from_dict(MODEL)))


@pytest.mark.gpu
def test_cuda_shards_initialized_on_the_gpu_equal_an_unsharded_cuda_init() -> None:
    """On CUDA the numbers come from the CUDA generator: the same sharded (one-rank FSDP2,
    bf16 compute, as a single-GPU run) as unsharded, all drawn on the GPU."""
    config = TransformerConfig.from_dict(MODEL)
    cuda = torch.device("cuda", torch.cuda.current_device())
    ctx = join_one_rank_group(DistributedContext(0, 1, cuda.index or 0, cuda, False))
    try:
        model = OLMo(config, init_device="meta")
        apply_fsdp(model, param_dtype=torch.bfloat16)
        model.to_empty(device=cuda)
        model.init_weights(seed=SEED)
        assert {p.device.type for p in model.parameters()} == {"cuda"}
        sharded = gathered(model)
    finally:
        dist.destroy_process_group()
    assert ctx.initialized
    reference = OLMo(config, init_device="meta")
    reference.to_empty(device=cuda)
    reference.init_weights(seed=SEED)
    assert_same(sharded, {k: v.cpu() for k, v in reference.state_dict().items()})
    assert not torch.equal(sharded["embeddings.weight"], old_init(config)["embeddings.weight"])
