"""The trainer under faults: tampered, damaged or missing checkpoints, interrupted saves, a full
disk, a torn metrics line, two runs on one directory, and bad command lines."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from olmo_nn.cli.main import main
from olmo_nn.train.callbacks.metrics_file import read_metrics

from .conftest import FreePort, RunRanks
from .test_trainer import REPO, dcp_save_in_use, losses, patch_dcp_save, small_config, train


class _Payload:
    """Unpickling this creates ``marker``: what a planted pickle would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An uninterrupted run with an unsharded checkpoint every 4 steps."""
    tmp = tmp_path_factory.mktemp("reference")
    config = small_config(tmp, save_interval_unsharded=4)
    assert train(config, tmp / "run") == 0
    return config, tmp / "run"


def same_weights(a: Path, b: Path) -> bool:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


# ------------------------------------------------------------------ 1: no unpickling on resume
@pytest.mark.parametrize("rerecorded", [True, False], ids=["manifest-updated", "manifest-stale"])
def test_planted_pickle_in_the_sharded_metadata_never_runs(
    reference: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rerecorded: bool,
) -> None:
    from olmo_nn.checkpoint.integrity import write_manifest

    config, _ = reference
    run, marker = tmp_path / "run", tmp_path / "pwned"
    assert train(config, run, "--stop-at", "2") == 0
    checkpoint = run / "checkpoints" / "step000002"
    (checkpoint / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    if rerecorded:  # a planter who also rewrites the sha256 record
        write_manifest(checkpoint)
    capsys.readouterr()
    assert train(config, run) == 2
    assert not marker.exists()
    err = capsys.readouterr().err
    if rerecorded:
        assert (
            f"olmo train: error: {checkpoint / '.metadata'}: refusing to unpickle builtins.exec: "
            "only torch.distributed.checkpoint's metadata classes are allowed; the checkpoint "
            "was tampered with, or written by an unsupported torch or Python version"
        ) in err
    else:
        assert (
            f"skipping checkpoint {checkpoint}: {checkpoint / '.metadata'}: its sha256 does not "
            "match"
        ) in err
        assert (
            f"olmo train: error: no intact checkpoint to resume from in {run / 'checkpoints'}: "
            "1 damaged (see above); restore the files, or move the folder aside to start over"
        ) in err


def test_resume_never_calls_torch_load_with_weights_only_false(
    reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = reference
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "2") == 0
    real_load = torch.load
    calls: list[Any] = []

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    assert train(config, run, "--stop-at", "3") == 0
    assert calls and all(weights_only is True for weights_only in calls), calls


def test_sharded_checkpoint_with_a_flipped_byte_is_refused(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = reference
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "2") == 0
    shard = run / "checkpoints" / "step000002" / "__0_0.distcp"
    flip_byte(shard)
    capsys.readouterr()
    assert train(config, run) == 2
    err = capsys.readouterr().err
    assert f"{shard}: its sha256 does not match the one recorded" in err
    assert f"olmo train: error: no intact checkpoint to resume from in {run / 'checkpoints'}" in err


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_metadata_naming_data_outside_the_folder_is_refused(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    from olmo_nn.checkpoint.integrity import write_manifest

    config, _ = reference
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "4") == 0
    checkpoints = run / "checkpoints"
    elsewhere = "../step000002/__0_0.distcp"
    if where == "absolute":
        elsewhere = str(checkpoints / "step000002" / "__0_0.distcp")
    metadata_file = checkpoints / "step000004" / ".metadata"
    metadata = pickle.loads(metadata_file.read_bytes())
    for info in metadata.storage_data.values():
        info.relative_path = elsewhere  # step 2's weights under step 4's name
    metadata_file.write_bytes(pickle.dumps(metadata))
    write_manifest(metadata_file.parent)  # and the record rewritten to match
    capsys.readouterr()
    assert train(config, run) == 2
    assert (
        f"olmo train: error: {metadata_file} names {elsewhere!r} as a data file, which is not a "
        f"file listed in {metadata_file.parent / 'SHA256SUMS'}: refusing to read it; the "
        "checkpoint was tampered with"
    ) in capsys.readouterr().err


def test_a_file_added_to_the_latest_checkpoint_is_ignored(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ref = reference
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "4") == 0
    latest = run / "checkpoints" / "step000004"
    (latest / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    capsys.readouterr()
    assert train(config, run) == 0
    captured = capsys.readouterr()
    assert f"resumed from {latest} (step 4" in captured.out
    notice = (
        f"{latest}: ignoring .DS_Store: not listed in SHA256SUMS (added after the checkpoint was "
        "written)\n"
    )
    assert captured.err.count(notice) == 1
    assert "skipping checkpoint" not in captured.err
    assert losses(run) == losses(ref)


# ------------------------------------------------------------------ 4: interval unsharded kept
def test_stop_at_an_unsharded_interval_writes_it(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    config, ref = reference
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "4") == 0
    saved = run / "checkpoints" / "step000004-unsharded"
    assert same_weights(saved, ref / "checkpoints" / "step000004-unsharded")
    assert (saved / "train_state.json").is_file()


def test_interrupted_between_the_two_saves_writes_the_unsharded_on_resume(
    reference: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import olmo_nn.train.trainer as trainer_module

    config, ref = reference
    run = tmp_path / "run"

    def killed(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # the process dies after the sharded save of step 4

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "save_unsharded", killed)
        with pytest.raises(KeyboardInterrupt):
            train(config, run)
    checkpoints = run / "checkpoints"
    assert (checkpoints / "step000004").is_dir()
    assert not (checkpoints / "step000004-unsharded").exists()
    capsys.readouterr()
    assert train(config, run) == 0
    assert f"wrote the missing {checkpoints / 'step000004-unsharded'}" in capsys.readouterr().out
    for step in (4, 8):
        name = f"step{step:06d}-unsharded"
        assert same_weights(checkpoints / name, ref / "checkpoints" / name)
    assert losses(run) == losses(ref)


# ------------------------------------------------------------------ 6: fall back past damage
@pytest.mark.parametrize("damage", ["flipped-byte", "missing-metadata"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    config, ref = reference
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "4") == 0
    latest = run / "checkpoints" / "step000004"
    if damage == "flipped-byte":
        flip_byte(latest / "__0_0.distcp")
        reason = f"{latest / '__0_0.distcp'}: its sha256 does not match"
    else:
        (latest / ".metadata").unlink()
        reason = f"{latest / '.metadata'} is listed in {latest / 'SHA256SUMS'} but missing"
    capsys.readouterr()
    assert train(config, run) == 0
    captured = capsys.readouterr()
    assert f"skipping checkpoint {latest}: {reason}" in captured.err
    assert f"resumed from {run / 'checkpoints' / 'step000002'} (step 2" in captured.out
    assert losses(run) == losses(ref)


# ------------------------------------------------------------------ 7: torn metrics.jsonl
def test_torn_last_metrics_line_is_dropped_and_the_run_resumes(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ref = reference
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "3") == 0
    metrics = run / "metrics.jsonl"
    with metrics.open("a") as out:
        out.write('{"step": 4, "loss": 11.1')  # the crash cut this line short
    capsys.readouterr()
    assert train(config, run) == 0
    assert (
        f"{metrics}: line 4 was cut off (a crash or a full disk while it was written); dropped it"
    ) in capsys.readouterr().err
    assert [m["step"] for m in read_metrics(run)] == list(range(1, 9))
    assert losses(run) == losses(ref)


def test_torn_metrics_line_elsewhere_is_named(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = reference
    run = tmp_path / "run"
    assert train(config, run, "--stop-at", "3") == 0
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"
    metrics.write_text("".join(lines))
    capsys.readouterr()
    assert train(config, run) == 2
    assert (
        f"olmo train: error: {metrics}, line 2: not valid JSON (Expecting value: line 1 column 21 "
        "(char 20)); only a cut-off last line is repaired: fix or remove this line"
    ) in capsys.readouterr().err


# ------------------------------------------------------------------ 8: one run per directory
def test_second_run_on_the_same_directory_is_refused(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = reference
    run = tmp_path / "run"
    hold = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from olmo_nn.train.lock import run_directory_lock\n"
        "with run_directory_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    # As a first `olmo train` holds it for its whole run, in another process.
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        capsys.readouterr()
        assert train(config, run) == 2
        assert (
            f"olmo train: error: {run} is in use by another `olmo train` (pid {holder.pid}); "
            "two runs must not write one run directory: wait for it to end, or stop it"
        ) in capsys.readouterr().err
        assert not (run / "metrics.jsonl").exists()
        holder.send_signal(signal.SIGKILL)  # it crashes: the kernel releases its lock
        assert holder.wait(timeout=30) == -signal.SIGKILL
    finally:
        holder.kill()
        holder.wait()
    assert train(config, run, "--stop-at", "1") == 0  # the next run starts
    assert not (run / ".lock").exists()


def _refused_worker(rank: int, port: int, config: str, run: str) -> None:
    from olmo_nn.parallel import init_distributed
    from olmo_nn.train.config import TrainConfig
    from olmo_nn.train.trainer import Trainer

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")  # fmt: skip
    ctx = init_distributed("cpu")
    try:
        trainer = Trainer(TrainConfig.load(Path(config)), Path(run), ctx=ctx)
        try:
            trainer.fit()
            outcome = "no error"
        except Exception as error:
            outcome = f"{type(error).__name__}: {error}"
        (Path(run).parent / f"rank{rank}.txt").write_text(outcome)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="needs torch.distributed")
@pytest.mark.parametrize("refusal", ["run-dir-in-use", "other-config"])
def test_every_rank_raises_rank_0s_refusal(
    tmp_path: Path, run_ranks: RunRanks, free_port: FreePort, refusal: str
) -> None:
    from olmo_nn.train.lock import run_directory_lock

    config, run = small_config(tmp_path), tmp_path / "run"
    if refusal == "run-dir-in-use":
        expected = f"RunDirectoryInUse: {run} is in use by another `olmo train` (pid {os.getpid()})"
        with run_directory_lock(run):
            run_ranks(_refused_worker, 2, free_port(), str(config), str(run), timeout_s=90)
    else:
        run.mkdir()
        (run / "config.yaml").write_text("max_steps: 1\n")
        expected = f"ValueError: {run} holds a run with a different config"
        run_ranks(_refused_worker, 2, free_port(), str(config), str(run), timeout_s=90)
    outcomes = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]
    assert outcomes[0].startswith(expected), outcomes
    assert outcomes[1] == outcomes[0]


# ------------------------------------------------------------------ disk full
def test_disk_full_names_the_cause_and_leaves_no_staging_folders(
    reference: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, ref = reference
    run = tmp_path / "run"
    real_save = dcp_save_in_use()
    calls: list[str] = []

    def full_disk(state: dict[str, Any], checkpoint_id: str, **kwargs: Any) -> Any:
        calls.append(checkpoint_id)
        if len(calls) == 2:  # step 4: half the files written, then the disk is full
            real_save({"model": state["model"]}, checkpoint_id=checkpoint_id, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(state, checkpoint_id=checkpoint_id, **kwargs)

    with monkeypatch.context() as patch:
        # In the background (async_checkpoint), raised in the loop with the same message.
        patch_dcp_save(patch, full_disk)
        capsys.readouterr()
        assert train(config, run) == 1
    err = capsys.readouterr().err
    checkpoints = run / "checkpoints"
    assert (
        f"olmo train: error: no space left on device: saving {checkpoints / 'step000004'} needs "
        "about "
    ) in err
    assert "MB are free; its partial files were removed. Free some space and run the same " in err
    assert (
        "from the last checkpoint (the error: OSError: [Errno 28] No space left on device)" in err
    )
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step000002"]
    # Leftovers of a save killed outright are removed at the next start.
    (checkpoints / ".step000004.partial").mkdir()
    (checkpoints / ".step000004-unsharded.x1y2z3").mkdir()
    assert train(config, run) == 0
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]
    assert losses(run) == losses(ref)


def test_disk_full_during_the_unsharded_save_is_named(
    reference: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import olmo_nn.checkpoint.unsharded as unsharded

    config, _ = reference
    run = tmp_path / "run"

    def full_disk(_tensors: object, filename: str, **_kwargs: object) -> None:
        Path(filename).write_bytes(b"\0" * 100)  # half written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(unsharded, "save_file", full_disk)
    capsys.readouterr()
    assert train(config, run, "--stop-at", "4") == 1
    checkpoints = run / "checkpoints"
    assert (
        f"olmo train: error: no space left on device: saving {checkpoints / 'step000004-unsharded'}"
        " needs about "
    ) in capsys.readouterr().err
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step000002", "step000004"]


def test_disk_full_hidden_behind_another_error_is_named(
    reference: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import olmo_nn.train.checkpointing as checkpointing

    config, _ = reference

    def torn_write(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("unexpected pos 704 vs 598")  # what torch says when a write fails

    def no_space(_path: object) -> Any:
        return shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)  # type: ignore[attr-defined]

    patch_dcp_save(monkeypatch, torn_write)
    monkeypatch.setattr(checkpointing.shutil, "disk_usage", no_space)
    capsys.readouterr()
    assert train(config, tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert "olmo train: error: no space left on device: saving " in err
    assert "and 0.0 MB are free" in err
    assert "(the error: RuntimeError: unexpected pos 704 vs 598)\n" in err


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize("value", ["0", "-5"])
def test_stop_at_below_one_is_refused(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    config, _ = reference
    with pytest.raises(SystemExit) as exit_:
        train(config, tmp_path / "run", f"--stop-at={value}")
    assert exit_.value.code == 2
    assert f"olmo train: error: argument --stop-at: {value} must be at least 1" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


def test_overrides_after_a_flag_are_accepted(
    reference: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = reference
    capsys.readouterr()
    assert main(["train", str(config), "--dry-run", "max_steps=5", "optim.lr=0.001"]) == 0
    out = capsys.readouterr().out
    assert "\nmax_steps: 5\n" in out and "lr: 0.001" in out
    with pytest.raises(SystemExit):
        main(["train", str(config), "--dry-run", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
