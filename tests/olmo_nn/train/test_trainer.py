"""The trainer end to end on CPU: exact resume (--stop-at and SIGKILL), world sizes, batch
reconstruction, and the refusals for bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from olmo_nn.checkpoint import load_model
from olmo_nn.cli.main import main
from olmo_nn.train.callbacks.metrics_file import read_metrics
from olmo_nn.train.config import TrainConfig

REPO = Path(__file__).parents[3]
SAMPLE = REPO / "data" / "sample"


def small_config(tmp_path: Path, **changes: object) -> Path:
    """A fast run over the committed sample shards: a narrow model, short sequences."""
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["model"].update(d_model=32, n_heads=2, mlp_hidden_size=64, max_sequence_length=64)
    config["data"].update(
        paths=[str(SAMPLE / "train")],
        sequence_length=64,
        validation_paths=[str(SAMPLE / "validation")],
    )
    config.update(
        global_batch_size=4, micro_batch_size=2, max_steps=8, save_interval=2, save_interval_unsharded=None,
        log_interval=1, mlflow=False, eval={"interval": 4, "max_batches": 2},
    )  # fmt: skip
    config["scheduler"].update(warmup_steps=2)
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def dcp_save_in_use() -> Callable[..., Any]:
    """DCP's save as the trainer calls it (both paths below call the same function)."""
    import torch.distributed.checkpoint as dcp

    return dcp.save


def patch_dcp_save(patch: pytest.MonkeyPatch, fake: Callable[..., Any]) -> None:
    """Make every sharded save call ``fake`` instead of DCP's save: the synchronous one
    (``async_checkpoint=false``) and the background thread of ``dcp.async_save``."""
    from torch.distributed.checkpoint import state_dict_saver

    import olmo_nn.train.checkpointing as checkpointing

    patch.setattr(checkpointing.dcp, "save", fake)
    patch.setattr(state_dict_saver, "save", fake)  # async_save's thread imports it at the call


def train(config: Path, run_dir: Path, *extra: str) -> int:
    return main(["train", str(config), "--run-dir", str(run_dir), *extra])


def losses(run_dir: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("reference")
    config = small_config(tmp)
    assert train(config, tmp / "run") == 0
    return config, tmp / "run"


def test_run_directory_contents(reference_run: tuple[Path, Path]) -> None:
    _, run = reference_run
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert {
        "step",
        "loss",
        "lr",
        "grad_norm",
        "tokens_seen",
        "tokens_per_s",
        "mfu",
        "batch_fingerprint",
    } <= set(metrics[0])
    assert metrics[3]["tokens_seen"] == 4 * 4 * 64
    assert "eval/loss" in metrics[3] and "eval/loss" in metrics[7]
    assert (run / "loss.png").stat().st_size > 1000
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step000006", "step000008", "step000008-unsharded"]  # keeps the last 2 sharded
    import olmo_nn

    model = olmo_nn.load_model(run / "checkpoints" / "step000008-unsharded")
    assert model.config.d_model == 32


def test_stop_at_and_resume_is_bit_identical(
    reference_run: tuple[Path, Path], tmp_path: Path
) -> None:
    config, reference = reference_run
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "3") == 0
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3]
    assert train(config, run) == 0
    assert losses(run) == losses(reference)  # exactly, not approximately
    assert [m["batch_fingerprint"] for m in read_metrics(run)] == [
        m["batch_fingerprint"] for m in read_metrics(reference)
    ]


def test_sigkill_during_training_then_resume_is_bit_identical(
    reference_run: tuple[Path, Path], tmp_path: Path
) -> None:
    config, reference = reference_run
    final_step = TrainConfig.load(config).max_steps  # 8, checkpoints every 2 steps
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "olmo_nn.cli.main",
        "train",
        str(config),
        "--run-dir",
        str(run),
    ]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Kill as soon as the first checkpoint is complete (the trainer renames it into place with
    # train_state.json written last), i.e. with 6 of the 8 steps, 2 evaluations and 4 saves
    # still to do: seconds of work against a 10 ms poll, so no race with the run's end.
    first = run / "checkpoints" / "step000002" / "train_state.json"
    deadline = time.monotonic() + 300
    try:
        while not first.is_file():
            assert process.poll() is None, f"the run exited ({process.returncode}) before step 2"
            assert time.monotonic() < deadline, "no checkpoint at step 2 within 300 s"
            time.sleep(0.01)
        alive_when_killed = process.poll() is None
        process.send_signal(signal.SIGKILL)  # a no-op if it has already exited
    finally:
        process.kill()  # no-op if already dead; never leave the child behind on a failure
        process.wait()
    # The signal, not a normal exit, ended it: a run that had finished would have exit code 0.
    assert alive_when_killed, "the run had finished before the kill"
    assert process.returncode == -signal.SIGKILL
    # The folder shows an unfinished run: the final step was never logged nor checkpointed.
    checkpoints = run / "checkpoints"
    assert not (checkpoints / f"step{final_step:06d}").exists()
    assert not (checkpoints / f"step{final_step:06d}-unsharded").exists()
    interrupted = [m["step"] for m in read_metrics(run)]
    assert 2 <= interrupted[-1] < final_step, interrupted

    assert train(config, run) == 0
    assert losses(run) == losses(reference)  # exactly, not approximately
    assert [m["batch_fingerprint"] for m in read_metrics(run)] == [
        m["batch_fingerprint"] for m in read_metrics(reference)
    ]
    name = f"step{final_step:06d}-unsharded"
    resumed = load_file(checkpoints / name / "model.safetensors")
    uninterrupted = load_file(reference / "checkpoints" / name / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for key, tensor in uninterrupted.items():
        assert torch.equal(resumed[key], tensor), key


# `olmo train`, its background save of step 4 held before SHA256SUMS is written (a slow disk).
_HELD_SAVE = """
import sys, time
import olmo_nn.train.checkpointing as checkpointing
from olmo_nn.cli.main import main
real_write_manifest = checkpointing.write_manifest
def held(folder):
    if folder.name == ".step000004.partial":
        time.sleep(3600)
    return real_write_manifest(folder)
checkpointing.write_manifest = held
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_sigkill_during_a_background_save_keeps_the_last_checkpoint_and_resumes_bit_identically(
    reference_run: tuple[Path, Path], tmp_path: Path
) -> None:
    config, reference = reference_run  # checkpoints every 2 steps, in the background
    run = tmp_path / "run"
    command = [sys.executable, "-c", _HELD_SAVE, str(config), "--run-dir", str(run)]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Steps 5 and 6 train while step 4's save is in flight; step 6's save then waits for it.
    deadline = time.monotonic() + 300
    try:
        while max((m["step"] for m in read_metrics(run)), default=0) < 6:
            assert process.poll() is None, f"the run exited ({process.returncode})"
            assert time.monotonic() < deadline, "step 6 not reached within 300 s"
            time.sleep(0.01)
        time.sleep(0.5)  # it would have gone on, had step 6 not waited for the save
        assert read_metrics(run)[-1]["step"] == 6
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    checkpoints = run / "checkpoints"
    # Killed mid-save: step 4 only in its staging folder (no SHA256SUMS), step 2 intact.
    assert sorted(p.name for p in checkpoints.iterdir()) == [".step000004.partial", "step000002"]
    assert not (checkpoints / ".step000004.partial" / "SHA256SUMS").exists()
    assert train(config, run) == 0  # resumes from step 2, removing the staging folder
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]
    assert losses(run) == losses(reference)  # exactly, not approximately
    name = "step000008-unsharded/model.safetensors"
    resumed = load_file(checkpoints / name)
    uninterrupted = load_file(reference / "checkpoints" / name)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[key], tensor) for key, tensor in uninterrupted.items())


def test_synchronous_checkpoints_hold_what_background_ones_do(
    reference_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    config, reference = reference_run  # async_checkpoint's default: true
    run = tmp_path / "run"
    assert train(config, run, "async_checkpoint=false") == 0
    assert losses(run) == losses(reference)
    for name in ("step000006", "step000008"):
        ours, theirs = run / "checkpoints" / name, reference / "checkpoints" / name
        states = [json.loads((p / "train_state.json").read_text()) for p in (ours, theirs)]
        for state in states:  # the process's RNG, which earlier tests in this process drew from
            del state["rng"]
        assert states[0] == states[1] and states[0]["step"] == int(name[4:])
        config_of = {p: yaml.safe_load((p / "config.yaml").read_text()) for p in (ours, theirs)}
        assert (
            config_of[ours].pop("async_checkpoint"),
            config_of[theirs].pop("async_checkpoint"),
        ) == (False, True)
        assert config_of[ours] == config_of[theirs]
        flat = []
        for side, folder in enumerate((ours, theirs)):
            dcp_to_torch_save(folder, tmp_path / f"{side}.pt")
            flat.append(dict(_flatten(torch.load(tmp_path / f"{side}.pt", weights_only=True))))
        assert flat[0].keys() == flat[1].keys() and len(flat[0]) > 20
        for key, value in flat[1].items():
            same = (
                torch.equal(flat[0][key], value)
                if isinstance(value, torch.Tensor)
                else (flat[0][key] == value)
            )
            assert same, key


def _flatten(tree: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix, tree


def test_on_checkpoint_fires_once_a_checkpoint_is_in_place_with_its_step(tmp_path: Path) -> None:
    from olmo_nn.train.callbacks.base import Callback
    from olmo_nn.train.trainer import Trainer

    seen: list[tuple[int, str, bool, bool, int]] = []

    class Recorder(Callback):
        def on_checkpoint(
            self, trainer: Trainer, path: Path, *, step: int, unsharded: bool
        ) -> None:
            in_place = (path / "SHA256SUMS").is_file() and trainer.last_checkpoint is not None
            seen.append((step, path.name, unsharded, in_place, trainer.step))

    config = TrainConfig.load(small_config(tmp_path, max_steps=4, save_interval=1,
                                           eval={"interval": 0, "max_batches": 1}))  # fmt: skip
    Trainer(config, tmp_path / "run", callbacks=[Recorder()]).fit()
    assert [entry[:4] for entry in seen] == [
        (1, "step000001", False, True),
        (2, "step000002", False, True),
        (3, "step000003", False, True),
        (4, "step000004", False, True),
        (4, "step000004-unsharded", True, True),
    ]
    # Each background save was handed over at a later step, or at the end's wait.
    assert all(step <= at for step, *_, at in seen)


def test_an_error_in_the_loop_lets_the_save_in_flight_complete_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from olmo_nn.train.callbacks.base import Callback
    from olmo_nn.train.checkpointing import read_train_state, verify_sharded
    from olmo_nn.train.trainer import Trainer

    real_save = dcp_save_in_use()

    def slow_disk(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)  # still writing step 2 when step 3 fails
        return real_save(*args, **kwargs)

    class FailsAtStep3(Callback):
        def on_step_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
            if metrics["step"] == 3:
                assert trainer.last_checkpoint is None  # step 2's save is in flight
                raise RuntimeError("a callback failed at step 3")

    patch_dcp_save(monkeypatch, slow_disk)
    config = TrainConfig.load(small_config(tmp_path, eval={"interval": 0, "max_batches": 1}))
    trainer = Trainer(config, tmp_path / "run", callbacks=[FailsAtStep3()])
    with pytest.raises(RuntimeError, match="a callback failed at step 3"):
        trainer.fit()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["step000002"]  # in place, no staging
    verify_sharded(checkpoints / "step000002")
    assert read_train_state(checkpoints / "step000002")["step"] == 2
    assert trainer.last_checkpoint == checkpoints / "step000002"


def test_a_stop_request_saves_stops_with_status_75_and_resumes_bit_identically(
    reference_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a Slurm job does when warned of its time limit: the trainer finishes its step,
    saves, answers the request and exits 75; started again, it ends as if never stopped."""
    config, reference = reference_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "stop-request").touch()  # there before the first step: it stops after step 1
    assert train(config, run) == 75
    assert [m["step"] for m in read_metrics(run)] == [1]
    assert json.loads((run / "stopped.json").read_text()) == {
        "step": 1,
        "checkpoint": str(run / "checkpoints" / "step000001"),
    }
    assert not (run / "stop-request").exists()
    assert (run / "checkpoints" / "step000001" / "train_state.json").is_file()
    assert "stopped after step 1 as " in capsys.readouterr().err
    assert train(config, run) == 0
    assert losses(run) == losses(reference)  # exactly, not approximately
    name = "step000008-unsharded/model.safetensors"
    resumed = load_file(run / "checkpoints" / name)
    uninterrupted = load_file(reference / "checkpoints" / name)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[key], tensor) for key, tensor in uninterrupted.items())


def test_a_run_resumes_with_other_hardware_settings_but_not_other_math(
    reference_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Micro-batch size, activation checkpointing, loader workers: how, not what. The
    optimizer, schedule, data, batch and seed must stay."""
    config, reference = reference_run
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "4") == 0
    capsys.readouterr()
    hardware = ["micro_batch_size=1", "activation_checkpointing=true", "data.num_workers=1"]
    assert train(config, run, *hardware) == 0
    assert (
        "with other settings that leave its math alone (activation_checkpointing, data, "
        "micro_batch_size)"
    ) in capsys.readouterr().err
    # Four micro-batches instead of two add up the same gradients in another order.
    assert losses(run)[:4] == losses(reference)[:4]
    assert losses(run)[4:] == pytest.approx(losses(reference)[4:], rel=1e-5, abs=1e-5)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["micro_batch_size"], saved["activation_checkpointing"]) == (1, True)
    for change in ("optim.lr=1e-3", "global_batch_size=8", "data.seed=1", "precision=bf16"):
        assert train(config, run, change) == 2
        err = capsys.readouterr().err
        assert f"{run} holds a run with a different config (sections differing: " in err
        assert "only run_name, micro_batch_size, save_interval" in err


def test_unshard_writes_the_files_the_trainer_writes(
    reference_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, reference = reference_run
    checkpoints = reference / "checkpoints"
    output = tmp_path / "step000008-unsharded"
    assert (
        main(["checkpoint", "unshard", str(checkpoints / "step000008"), "--output", str(output)])
        == 0
    )
    assert capsys.readouterr().out == f"wrote {output}\n"
    written = checkpoints / "step000008-unsharded"
    assert sorted(p.name for p in output.iterdir()) == sorted(p.name for p in written.iterdir())
    for path in written.iterdir():
        assert (output / path.name).read_bytes() == path.read_bytes(), path.name
    assert (
        main(["checkpoint", "unshard", str(checkpoints / "step000008"), "--output", str(output)])
        == 2
    )
    assert f"{output} already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["checkpoint", "unshard", str(written)]) == 2
    assert "is not a sharded checkpoint (no .metadata in it)" in capsys.readouterr().err


def test_two_ranks_agree_to_stop_on_rank_0s_request(
    reference_run: tuple[Path, Path], tmp_path: Path
) -> None:
    config, reference = reference_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "stop-request").touch()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "olmo_nn.cli.main", "train", str(config), "--run-dir", str(run),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    # The ranks exit 75; torchrun reports its workers' failure as its own status 1.
    assert result.returncode == 1, result.stderr[-3000:]
    assert "exitcode  : 75" in result.stderr, result.stderr[-3000:]
    assert json.loads((run / "stopped.json").read_text())["step"] == 1
    shards = sorted(p.name for p in (run / "checkpoints" / "step000001").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    # Two ranks' shards, unsharded offline in one process: the weights the run resumes from.
    assert main(["checkpoint", "unshard", str(run / "checkpoints" / "step000001")]) == 0
    two = load_model(run / "checkpoints" / "step000001-unsharded").state_dict()
    one_run = tmp_path / "one"
    assert train(config, one_run, "--stop-at", "1") == 0
    assert main(["checkpoint", "unshard", str(one_run / "checkpoints" / "step000001")]) == 0
    one = load_model(one_run / "checkpoints" / "step000001-unsharded").state_dict()
    assert one.keys() == two.keys()
    for key, tensor in one.items():
        torch.testing.assert_close(two[key], tensor, rtol=1e-5, atol=1e-6, msg=key)
    assert train(config, run) == 0  # resumed in one process
    assert losses(run) == pytest.approx(losses(reference), rel=1e-4, abs=1e-4)


def test_two_processes_match_one(reference_run: tuple[Path, Path], tmp_path: Path) -> None:
    config, reference = reference_run
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "olmo_nn.cli.main", "train", str(config), "--run-dir", str(run), "--stop-at", "4",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    two = read_metrics(run)
    one = read_metrics(reference)[:4]
    assert [m["batch_fingerprint"] for m in two] == [m["batch_fingerprint"] for m in one]
    for a, b in zip(two, one, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-5)
    # A checkpoint written by 2 processes resumes in 1 and finishes the run.
    assert train(config, run) == 0
    assert losses(run)[4:] == pytest.approx(losses(reference)[4:], rel=1e-4, abs=1e-4)


def test_batch_reconstruction_matches_the_logged_fingerprint(
    reference_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = reference_run
    capsys.readouterr()
    assert main(["batch", str(run), "--step", "5", "--json"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert batch["batch_fingerprint"] == read_metrics(run)[4]["batch_fingerprint"]
    assert len(batch["instances"]) == 4


def test_dry_run_prints_derived_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(REPO / "configs" / "olmo-1b.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# instances per step: 2048 x 2048 tokens = 4,194,304 tokens" in out
    assert "# micro-batch per device: 4; gradient accumulation: 512" in out
    assert "# parameters: 1,176,764,416" in out


def test_impossible_batch_arithmetic_fails_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = small_config(tmp_path, global_batch_size=6, micro_batch_size=4)
    assert train(config, tmp_path / "run") == 2
    assert (
        "global_batch_size=6 is not divisible by micro_batch_size=4 x world_size=1"
        in capsys.readouterr().err
    )


def test_shards_beyond_the_vocabulary_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = small_config(tmp_path, model__vocab_size=1000, model__embedding_size=1024,
                          model__eos_token_id=0, model__pad_token_id=1)  # fmt: skip
    assert train(config, tmp_path / "run") == 2
    assert "vocab" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_non_finite_loss_stops_with_the_last_checkpoint(tmp_path: Path) -> None:
    from olmo_nn.train.trainer import NonFiniteLossError

    config = small_config(tmp_path, optim__lr=1.0e30, clip__max_grad_norm=None)
    with pytest.raises(
        NonFiniteLossError, match=r"step \d+: loss .* is not finite; the last good checkpoint is"
    ):
        train(config, tmp_path / "run")


def test_trainer_clips_to_the_configured_bound_and_logs_the_norm_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import olmo_nn.train.trainer as trainer_module

    def norm_by_hand(params: list[torch.Tensor]) -> float:
        """The global gradient norm, summed in float64 outside the code under test."""
        squares = [float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None]
        return math.sqrt(sum(squares))

    real_clip = trainer_module.clip_grad_norm
    seen: list[tuple[float | None, float, float, float]] = []

    def recording_clip(parameters: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor:
        params = [p for p in parameters if p.grad is not None]
        before = norm_by_hand(params)
        reported = real_clip(params, max_norm)
        seen.append((max_norm, before, reported.item(), norm_by_hand(params)))
        return reported

    monkeypatch.setattr(trainer_module, "clip_grad_norm", recording_clip)
    # Gradient norms here are ~1.5-2.5: both bounds make clipping act on every step.
    clip = {"max_grad_norm": 0.5, "early_max_grad_norm": 1.0, "early_steps": 1}
    config = small_config(tmp_path, clip=clip, max_steps=3, save_interval=1000,
                          eval={"interval": 0, "max_batches": 1})  # fmt: skip
    assert train(config, tmp_path / "run") == 0
    assert [bound for bound, *_ in seen] == [1.0, 0.5, 0.5]
    logged = [m["grad_norm"] for m in read_metrics(tmp_path / "run")]
    # torch's float32 vector_norm on CPU sums without cascading: over the 1.6M-element embedding
    # gradient it comes out low by ~2e-5-4e-5 relative here (up to ~3e-4 on other data), so the
    # clipped norm can overshoot the bound by as much. Allow that much float32 error, no more.
    rtol = 1e-3
    for (bound, before, reported, after), grad_norm in zip(seen, logged, strict=True):
        assert bound is not None and before > bound  # clipping acted
        assert reported == pytest.approx(before, rel=rtol)  # the norm before clipping...
        assert grad_norm == reported  # ...is what the run logs
        assert after <= bound * (1 + rtol)
        assert after == pytest.approx(bound, rel=rtol)  # clipped to the bound, not below it


def test_running_out_of_data_rolls_into_a_new_epoch(tmp_path: Path) -> None:
    # The validation shards hold ~32k tokens: ~500 instances of 64, i.e. ~125 steps of 4.
    config = small_config(tmp_path, data__paths=[str(SAMPLE / "validation")], max_steps=130,
                          save_interval=1000, eval={"interval": 0, "max_batches": 1})  # fmt: skip
    assert train(config, tmp_path / "run") == 0
    epochs = [m["epoch"] for m in read_metrics(tmp_path / "run")]
    assert epochs[0] == 0 and epochs[-1] == 1
    assert (tmp_path / "run" / "data_order" / "epoch-1.npy").is_file()


def test_resolved_config_is_saved(reference_run: tuple[Path, Path]) -> None:
    _, run = reference_run
    saved = TrainConfig.load(run / "config.yaml")
    assert saved.data.sequence_length == 64
    assert saved.scheduler.t_max == 8


def test_mlflow_run_records_params_metrics_and_checkpoint_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = small_config(tmp_path, mlflow=True, max_steps=4, run_name="tracked")
    assert train(config, tmp_path / "run") == 0
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("olmo-lab")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.002"
    assert run.data.params["model.d_model"] == "32"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == losses(tmp_path / "run")
    tags = run.data.tags
    from olmo_nn.checkpoint.integrity import content_hash

    final = tmp_path / "run" / "checkpoints" / "step000004-unsharded"
    assert tags["checkpoint.unsharded.step000004.path"] == str(final.resolve())
    assert tags["checkpoint.unsharded.step000004.sha256"] == content_hash(final)
    # The background saves are recorded under their own step, not the step that saw them done.
    for step in (2, 4):
        sharded = tmp_path / "run" / "checkpoints" / f"step{step:06d}"
        assert tags[f"checkpoint.sharded.step{step:06d}.path"] == str(sharded.resolve())
        assert tags[f"checkpoint.sharded.step{step:06d}.sha256"] == content_hash(sharded)


def test_skip_step_policy_skips_non_finite_steps_instead_of_stopping(tmp_path: Path) -> None:
    config = small_config(tmp_path, optim__lr=1.0e30, clip__max_grad_norm=None,
                          skip_step={"enabled": True, "sigma": 6.0, "window": 16})  # fmt: skip
    assert train(config, tmp_path / "run") == 0
    metrics = read_metrics(tmp_path / "run")
    assert len(metrics) == 8
    assert any(m.get("skipped") for m in metrics)


def test_batch_size_warmup_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 2 instances x 64 tokens per step until 256 tokens are seen, then 4.
    config = small_config(
        tmp_path, batch_size_warmup={"start_instances": 2, "doubling_tokens": 256}
    )
    assert train(config, tmp_path / "run") == 0
    metrics = read_metrics(tmp_path / "run")
    assert [m["batch_size"] for m in metrics] == [2, 2, 4, 4, 4, 4, 4, 4]
    assert [m["instances_consumed"] for m in metrics] == [2, 4, 8, 12, 16, 20, 24, 28]
    capsys.readouterr()
    assert main(["batch", str(tmp_path / "run"), "--step", "3", "--json"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert (batch["start"], batch["size"]) == (4, 4)
    assert batch["batch_fingerprint"] == metrics[2]["batch_fingerprint"]


def test_loader_workers_do_not_change_the_run(
    reference_run: tuple[Path, Path], tmp_path: Path
) -> None:
    _, reference = reference_run
    config = small_config(tmp_path, data__num_workers=2)
    assert train(config, tmp_path / "run") == 0
    assert losses(tmp_path / "run") == losses(reference)


def test_crash_during_a_save_leaves_the_previous_checkpoint(
    reference_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, reference = reference_run
    run = tmp_path / "run"
    real_save = dcp_save_in_use()
    calls = []

    def crash_on_second_save(state: dict[str, Any], checkpoint_id: str, **kwargs: Any) -> Any:
        calls.append(checkpoint_id)
        if len(calls) == 2:  # step 4: write half the files, then die
            real_save({"model": state["model"]}, checkpoint_id=checkpoint_id, **kwargs)
            raise OSError("disk full")
        return real_save(state, checkpoint_id=checkpoint_id, **kwargs)

    with monkeypatch.context() as patch:
        patch_dcp_save(patch, crash_on_second_save)
        with pytest.raises(OSError, match="disk full"):  # in the background, raised in the loop
            train(config, run)
    complete = sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("."))
    assert complete == ["step000002"]  # the interrupted step-4 save left no complete-looking folder
    assert train(config, run) == 0
    assert losses(run) == losses(reference)


def test_in_loop_downstream_evaluation(tmp_path: Path) -> None:
    config = small_config(
        tmp_path,
        eval={"interval": 4, "max_batches": 2, "downstream_tasks": ["copa"], "downstream_limit": 8},
    )
    assert train(config, tmp_path / "run") == 0
    metrics = read_metrics(tmp_path / "run")
    evaluated = [m for m in metrics if "eval/downstream/copa/acc" in m]
    assert [m["step"] for m in evaluated] == [4, 8]
    assert all(0.0 <= m["eval/downstream/copa/acc"] <= 1.0 for m in evaluated)
    assert (
        evaluated[0]["eval/downstream/copa/acc"] == evaluated[0]["eval/downstream/copa/acc_none"]
    )  # COPA's default
