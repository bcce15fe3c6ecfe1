"""Typed configs: unknown keys named, validation errors name the field, YAML round trip.

Every value loaded from YAML, a mapping or a ``key=value`` override is checked against its
field's annotation; a bad one raises :class:`ConfigError` as
``FIELD: expected TYPE IN WORDS, got REPR (TYPE)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from olmo_nn.cli.main import main
from olmo_nn.config import Config, ConfigError
from olmo_nn.model import PRESETS, TransformerConfig, preset
from olmo_nn.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def _error(build: Any, *args: Any) -> str:
    with pytest.raises(ConfigError) as error:
        build(*args)
    return str(error.value)


# ------------------------------------------------------------------------------- unknown keys
def test_unknown_key_with_a_close_match_suggests_it() -> None:
    data = TransformerConfig.tiny().to_dict() | {"d_modle": 64}
    assert _error(TransformerConfig.from_dict, data) == (
        "unknown TransformerConfig key: d_modle (did you mean d_model?)"
    )


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    data = TransformerConfig.tiny().to_dict() | {"colour": "red"}
    message = _error(TransformerConfig.from_dict, data)
    assert message.startswith(
        "unknown TransformerConfig key: colour; valid keys are: d_model, n_heads, n_layers, "
    )
    assert message.endswith(", pad_token_id")


def test_unknown_override_names_the_dotted_path_and_the_section_it_belongs_to() -> None:
    config = TrainConfig.load(TINY)
    assert _error(config.with_overrides, ["model.d_modle=64"]) == (
        "unknown TransformerConfig key: model.d_modle (did you mean model.d_model?)"
    )
    # ``olmo train configs/tiny.yaml d_model=512``: the key lives in the model section.
    assert _error(config.with_overrides, ["d_model=512"]) == (
        "unknown TrainConfig key: d_model (did you mean model.d_model?)"
    )
    assert _error(config.with_overrides, ["optim.colour.shade=1"]).startswith(
        "unknown OptimConfig key: optim.colour; valid keys are: lr, betas, "
    )
    assert _error(config.with_overrides, ["model.d_model.x=1"]) == (
        "override 'model.d_model.x=1': model.d_model is not a config section"
    )


def test_missing_required_key_is_named() -> None:
    assert _error(TransformerConfig.from_dict, {"d_model": 64, "n_heads": 4}) == (
        "missing TransformerConfig key: n_layers"
    )
    # A section that is off (null) can be switched on from the command line, key by key.
    config = TrainConfig.load(TINY)
    assert _error(config.with_overrides, ["batch_size_warmup.start_instances=2"]) == (
        "missing BatchSizeWarmupConfig key: batch_size_warmup.doubling_tokens"
    )
    warm = config.with_overrides(
        ["batch_size_warmup.start_instances=2", "batch_size_warmup.doubling_tokens=1e6"]
    )
    assert warm.batch_size_warmup is not None
    assert warm.batch_size_warmup.doubling_tokens == 1_000_000


# -------------------------------------------------------- values checked, as `olmo train` does
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("d_model=abc", "d_model: expected an integer, got 'abc' (str)"),
        ("n_layers=2.5", "n_layers: expected an integer, got 2.5 (float)"),
        ("n_layers=true", "n_layers: expected an integer, got True (bool)"),
        ("weight_tying=maybe", "weight_tying: expected a boolean (true or false), got 'maybe' (str)"),
        ("weight_tying=1", "weight_tying: expected a boolean (true or false), got 1 (int)"),
        ("rope_theta=fast", "rope_theta: expected a number, got 'fast' (str)"),
        ("rope_theta=false", "rope_theta: expected a number, got False (bool)"),
        ("mlp_hidden_size=wide", "mlp_hidden_size: expected an integer or null, got 'wide' (str)"),
        ("norm_type=batchnorm", "norm_type: expected one of 'layernorm', 'rmsnorm', got 'batchnorm' (str)"),
    ],
)  # fmt: skip
def test_bad_model_override_names_field_value_and_type(override: str, message: str) -> None:
    assert _error(preset("tiny").with_overrides, [override]) == message
    # The same through the training config, with the section's dotted path.
    assert (
        _error(TrainConfig.load(TINY).with_overrides, [f"model.{override}"]) == f"model.{message}"
    )


def test_bad_item_in_a_list_is_named_by_its_index() -> None:
    config = TrainConfig.load(TINY)
    assert _error(config.with_overrides, ["data.paths=[a, b, 3]"]) == (
        "data.paths[2]: expected a string, got 3 (int)"
    )
    assert _error(config.with_overrides, ["optim.betas=[0.9, high]"]) == (
        "optim.betas[1]: expected a number, got 'high' (str)"
    )
    assert _error(config.with_overrides, ["optim.betas=[0.9]"]) == (
        "optim.betas: expected a list of 2 items, got [0.9] (list)"
    )


def test_bad_nested_field_is_named_by_its_dotted_path() -> None:
    data = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    data["model"]["n_heads"] = "four"
    assert _error(TrainConfig.from_dict, data) == (
        "model.n_heads: expected an integer, got 'four' (str)"
    )
    data["model"] = 128
    assert _error(TrainConfig.from_dict, data) == (
        "model: expected a mapping for TransformerConfig, got 128 (int)"
    )


def test_yaml_file_with_a_bad_value(tmp_path: Path) -> None:
    text = TINY.read_text(encoding="utf-8").replace("weight_tying: true", "weight_tying: maybe")
    assert "weight_tying: maybe" in text
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    assert _error(TrainConfig.load, path) == (
        "model.weight_tying: expected a boolean (true or false), got 'maybe' (str)"
    )


def test_what_yaml_users_write_is_accepted() -> None:
    config = TrainConfig.load(TINY).with_overrides(
        ["max_steps=1e4", "optim.lr=3e-4", "model.n_layers=4.0", "model.rope_theta=500000"]
    )
    assert (config.max_steps, config.optim.lr) == (10_000, 3e-4)
    assert (config.model.n_layers, config.model.rope_theta) == (4, 500000.0)
    assert isinstance(config.max_steps, int) and isinstance(config.model.rope_theta, float)
    # YAML 1.1 reads 3e-4 (no dot) as a string: it is still the number a user means.
    assert TrainConfig.from_yaml(TINY.read_text() + "z_loss: 1e-5\n").z_loss == 1e-5
    assert preset("tiny").with_overrides(["clip_qkv=null"]).clip_qkv is None


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(kw_only=True)
class Inner(Config):
    size: int = 1


@dataclass(kw_only=True)
class Everything(Config):
    """One field of every annotation kind the checker knows."""

    name: str = "x"
    path: Path = Path(".")
    colour: Colour = Colour.RED
    mode: Literal["a", "b"] = "a"
    sizes: list[int] = field(default_factory=list)
    pair: tuple[float, float] = (0.0, 1.0)
    many: tuple[str, ...] = ()
    table: dict[str, Inner] = field(default_factory=dict)
    either: int | str = 0
    maybe: Inner | None = None
    anything: Any = None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": 123}, "name: expected a string, got 123 (int)"),
        ({"name": True}, "name: expected a string, got True (bool)"),
        ({"name": ["a"]}, "name: expected a string, got ['a'] (list)"),
        ({"path": 3}, "path: expected a path, got 3 (int)"),
        ({"colour": "green"}, "colour: expected one of 'red', 'blue', got 'green' (str)"),
        ({"mode": "c"}, "mode: expected one of 'a', 'b', got 'c' (str)"),
        ({"sizes": "1,2"}, "sizes: expected a list, got '1,2' (str)"),
        ({"sizes": [1, 2, False]}, "sizes[2]: expected an integer, got False (bool)"),
        ({"pair": [1, 2, 3]}, "pair: expected a list of 2 items, got [1, 2, 3] (list)"),
        ({"many": ["a", None]}, "many[1]: expected a string, got None (NoneType)"),
        ({"table": {"k": {"size": "big"}}}, "table.k.size: expected an integer, got 'big' (str)"),
        ({"table": {"k": {"sise": 2}}}, "unknown Inner key: table.k.sise (did you mean table.k.size?)"),
        ({"table": ["k"]}, "table: expected a mapping, got ['k'] (list)"),
        ({"either": 1.5}, "either: expected an integer or a string, got 1.5 (float)"),
        ({"maybe": {"size": 0.5}}, "maybe.size: expected an integer, got 0.5 (float)"),
        ({"maybe": "yes"}, "maybe: expected a mapping for Inner or null, got 'yes' (str)"),
    ],
)  # fmt: skip
def test_every_annotation_kind_is_checked(data: dict[str, Any], message: str) -> None:
    assert _error(Everything.from_dict, data) == message


def test_every_annotation_kind_converts_what_fits() -> None:
    config = Everything.from_dict(
        {"path": "a/b", "colour": "blue", "mode": "b", "sizes": [1, 2.0], "pair": [1, 2],
         "many": ["x"], "table": {"k": {"size": 3}}, "either": "s", "maybe": {"size": 2},
         "anything": {"what": [1, "ever"]}}
    )  # fmt: skip
    assert config == Everything(
        path=Path("a/b"), colour=Colour.BLUE, mode="b", sizes=[1, 2], pair=(1.0, 2.0),
        many=("x",), table={"k": Inner(size=3)}, either="s", maybe=Inner(size=2),
        anything={"what": [1, "ever"]},
    )  # fmt: skip
    assert Everything.from_dict({"maybe": None, "name": Path("p")}).name == "p"


# ------------------------------------------------------------------ every shipped config loads
@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_training_configs_load(path: Path) -> None:
    config = TrainConfig.load(path).resolved()
    assert TrainConfig.from_yaml(config.to_yaml()) == config


@pytest.mark.parametrize(
    "path", sorted((REPO / "configs" / "models").glob("*.yaml")), ids=lambda p: p.name
)
def test_model_configs_load(path: Path) -> None:
    config = TransformerConfig.load(path)
    assert TransformerConfig.from_yaml(config.to_yaml()) == config


@pytest.mark.parametrize("name", [*PRESETS, *(f"{p}-olmo2" for p in PRESETS)])
def test_model_presets_round_trip(name: str) -> None:
    config = preset(name)
    assert TransformerConfig.from_dict(config.to_dict()) == config


def test_curation_configs_and_presets_load() -> None:
    curation = pytest.importorskip("olmo_assets.curation.config")
    mixes = pytest.importorskip("olmo_assets.curation.mixes")
    presets = pytest.importorskip("olmo_assets.curation.presets")
    for path in sorted((REPO / "configs" / "curation").glob("*.yaml")):
        curation.CurationConfig.load(path)
    for name in presets.available_presets():
        rules, spans = mixes.rules_from_preset(name, stage="quality")
        config = curation.CurationConfig(sources=[], rules=rules, span_replacements=spans)
        assert curation.CurationConfig.from_dict(config.to_dict()) == config
    for mix in mixes.MIXES.values():
        config = mix()
        config.sources = [mixes.code_source("code", ["x"])]
        assert curation.CurationConfig.from_yaml(config.to_yaml()) == config


def test_lab_params_load() -> None:
    params = pytest.importorskip("olmo_assets.lab.params")
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params.LabParams.from_yaml_dict(data)


# ------------------------------------------------------------------------- the command line
def test_olmo_train_prints_the_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", str(TINY), "model.d_model=abc", "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "olmo train: error: model.d_model: expected an integer, got 'abc' (str)\n"
    )
    assert main(["train", str(TINY), "d_model=abc", "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        "olmo train: error: unknown TrainConfig key: d_model (did you mean model.d_model?)\n"
    )
    assert not (tmp_path / "run").exists()


def test_olmo_model_prints_the_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "show", "--preset", "tiny", "weight_tying=maybe"]) == 2
    assert capsys.readouterr().err == (
        "olmo model: error: weight_tying: expected a boolean (true or false), got 'maybe' (str)\n"
    )


# ------------------------------------------------------------------------------- the rest
def test_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"d_model=100 must be divisible by n_heads=3"):
        TransformerConfig(d_model=100, n_heads=3, n_layers=1)
    with pytest.raises(ConfigError, match=r"norm_type='batchnorm'"):
        TransformerConfig(d_model=64, n_heads=4, n_layers=1, norm_type="batchnorm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"embedding_size=100 must be >= vocab_size=50280"):
        TransformerConfig(d_model=64, n_heads=4, n_layers=1, embedding_size=100)


def test_yaml_round_trip_and_overrides() -> None:
    config = preset("olmo-1b-olmo2")
    assert TransformerConfig.from_yaml(config.to_yaml()) == config
    changed = config.with_overrides(["n_layers=4", "rope_theta=1e4", "clip_qkv=8"])
    assert (changed.n_layers, changed.rope_theta, changed.clip_qkv) == (4, 10000.0, 8)
    assert isinstance(changed.clip_qkv, float)
    with pytest.raises(ConfigError, match="unknown TransformerConfig key"):
        config.with_overrides(["n_layer=4"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        config.with_overrides(["n_layers"])


def test_unknown_preset_lists_the_available_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model preset 'olmo-3b'; available: tiny, olmo-60m"
    ):
        preset("olmo-3b")


# ------------------------------------------------------------------- unreadable config files
def test_broken_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  d_model: [64\n  n_heads: 4\n", encoding="utf-8")
    assert _error(TrainConfig.load, path) == (
        f"{path}, line 3, column 10: not valid YAML: expected ',' or ']', but got ':'"
    )
    path.write_text("model: x: y\n", encoding="utf-8")
    assert _error(TrainConfig.load, path) == (
        f"{path}, line 1, column 9: not valid YAML: mapping values are not allowed here"
    )


def test_non_utf8_config_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 1\nname: café\n".encode("latin-1"))
    assert _error(TrainConfig.load, path) == (
        f"{path}, line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    )


def test_a_directory_is_not_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _error(TrainConfig.load, tmp_path) == (
        f"config file {tmp_path} is a directory; give the path of a YAML file"
    )
    assert main(["train", str(tmp_path), "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"olmo train: error: config file {tmp_path} is a directory; give the path of a YAML file\n"
    )


@pytest.mark.parametrize("name", ["../../x", "..", "a/b"])
def test_a_run_name_must_be_one_safe_path_part(name: str) -> None:
    from olmo_nn.train.config import TrainConfig

    config = TrainConfig.load(REPO / "configs" / "tiny.yaml")
    with pytest.raises(ConfigError) as error:
        config.with_overrides([f"run_name={name}"])
    assert str(error.value) == (
        f"run name {name!r} is not allowed: use letters, digits, '_' and '-' (starting with a "
        "letter or digit), since it names the run's folder under runs/"
    )
