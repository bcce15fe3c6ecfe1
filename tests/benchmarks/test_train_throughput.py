"""The training benchmark runs end to end on a CPU (small shape, eager rows)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "train_throughput.py"


def test_benchmark_prints_a_row_per_model(capsys) -> None:  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--small", "--no-compile"])
    assert [row["name"] for row in rows] == ["transformers eager", "ours eager"]
    assert all(row["tokens_per_s"] > 0 for row in rows)
    assert "ours eager" in capsys.readouterr().out


def test_cpu_mode_configs_are_valid_and_match_the_presets(tmp_path: Path) -> None:
    """Each --cpu shape gives a config `olmo train` accepts, with the preset's dimensions."""
    from olmo_nn.model import preset
    from olmo_nn.train.config import TrainConfig

    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, shape in module.CPU_SHAPES.items():
        model, tree = module._cpu_config(shape, tmp_path / "shard")
        config = TrainConfig.from_dict(tree)
        base = preset(shape["preset"])
        assert (config.model.d_model, config.model.n_layers, config.model.n_heads) == (
            base.d_model,
            base.n_layers,
            base.n_heads,
        ), name
        assert config.model.hidden_size == base.hidden_size
        assert config.model.weight_tying == base.weight_tying
        assert config.global_batch_size == config.micro_batch_size == shape["batch"]
        assert config.max_steps == shape["steps"] > shape["warmup_steps"]
        assert config.data.sequence_length == shape["seq"]
        assert not config.mlflow and config.eval.interval == 0
        assert model == config.model
