"""Data order: instance space over several folders, seeded permutations, rank slices, fingerprints."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from olmo_nn.config import ConfigError
from olmo_nn.data import InstanceDocument, ShardWriter
from olmo_nn.train.data_order import (
    DataConfig,
    DataOrder,
    InstanceSpace,
    batch_fingerprint,
    check_batch_divisibility,
    epoch_permutation,
    micro_batches,
    rank_slice,
)

SEQ = 4


def write_shards(folder: Path, documents: list[tuple[str, str, list[int]]]) -> Path:
    """Shards of (source, id, tokens) documents; EOS is token 0."""
    with ShardWriter(folder, vocab_size=1000, eos_token_id=0) as writer:
        for source, doc_id, tokens in documents:
            writer.write(np.array(tokens, dtype=np.int64), id=doc_id, source=source)
    return folder


@pytest.fixture
def two_folders(tmp_path: Path) -> list[str]:
    """Folder a: 16 tokens = 4 instances; folder b: 13 tokens = 3 instances (1 dropped).

    Instances (seq 4): 0 [1,2,3,0]  1 [4,5,6,7]  2 [8,9,10,0]  3 [11,12,13,0]
    4 [20,21,22,23]  5 [24,25,0,30]  6 [31,32,33,34]
    """
    a = write_shards(
        tmp_path / "a",
        [
            ("web", "a0", [1, 2, 3]),
            ("web", "a1", [4, 5, 6, 7, 8, 9, 10]),
            ("web", "a2", [11, 12, 13]),
        ],
    )
    b = write_shards(
        tmp_path / "b",
        [("books", "b0", [20, 21, 22, 23, 24, 25]), ("code", "b1", [30, 31, 32, 33, 34])],
    )
    return [str(a), str(b)]


# ---------------------------------------------------------------------- config
def test_data_config_defaults_round_trip_and_validation() -> None:
    config = DataConfig(paths=["data/train"])
    assert (config.sequence_length, config.seed, config.num_workers) == (None, 6198, 0)
    assert config.validation_paths == []
    assert DataConfig.from_yaml(config.to_yaml()) == config
    assert config.resolve_sequence_length(2048) == 2048
    assert config.replace(sequence_length=512).resolve_sequence_length(2048) == 512
    with pytest.raises(
        ValueError, match="sequence_length=4096 exceeds the model's max_sequence_length=2048"
    ):
        config.replace(sequence_length=4096).resolve_sequence_length(2048)
    with pytest.raises(ConfigError, match=r"data\.paths is empty"):
        DataConfig(paths=[])
    with pytest.raises(ConfigError, match=r"paths: expected a list, got 'data/train' \(str\)"):
        DataConfig.from_dict({"paths": "data/train"})
    with pytest.raises(ConfigError, match=r"data\.sequence_length=0"):
        DataConfig(paths=["x"], sequence_length=0)
    with pytest.raises(ConfigError, match=r"data\.num_workers=-1"):
        DataConfig(paths=["x"], num_workers=-1)
    with pytest.raises(ConfigError, match=r"data\.seed=-3"):
        DataConfig(paths=["x"], seed=-3)


def test_data_config_builds_spaces(two_folders: list[str]) -> None:
    config = DataConfig(paths=two_folders, sequence_length=SEQ, validation_paths=two_folders[1:])
    assert len(config.build(max_sequence_length=8)) == 7
    validation = config.build_validation(max_sequence_length=8)
    assert validation is not None and len(validation) == 3
    assert DataConfig(paths=two_folders).build_validation(8) is None


# ---------------------------------------------------------------------- instance space
def test_instance_space_concatenates_folders(two_folders: list[str]) -> None:
    space = InstanceSpace(two_folders, SEQ)
    assert len(space) == 7
    assert space[0].tolist() == [1, 2, 3, 0]
    assert space[3].tolist() == [11, 12, 13, 0]
    assert space[4].tolist() == [20, 21, 22, 23]
    assert space[6].tolist() == [31, 32, 33, 34]
    assert space[5].dtype == np.int64
    assert space.tokens([6, 0]).tolist() == [[31, 32, 33, 34], [1, 2, 3, 0]]
    with pytest.raises(IndexError, match="instance 7 is out of range: 7 instances of 4 tokens"):
        space[7]


def test_documents_in_instance_names_the_folder(two_folders: list[str]) -> None:
    space = InstanceSpace(two_folders, SEQ)
    origin = space.documents_in_instance(5)
    assert (origin.instance, origin.folder, origin.folder_number, origin.local_instance) == (
        5,
        two_folders[1],
        1,
        1,
    )
    assert origin.documents == [
        InstanceDocument(source="books", id="b0", start=0, end=3, offset=4, index=0),
        InstanceDocument(source="code", id="b1", start=3, end=4, offset=0, index=1),
    ]
    second_half = space.documents_in_instance(2)
    assert second_half.folder_number == 0
    assert [(d.id, d.start, d.end, d.offset) for d in second_half.documents] == [("a1", 0, 4, 4)]


def test_instance_space_survives_pickling(two_folders: list[str]) -> None:
    import pickle

    space = InstanceSpace(two_folders, SEQ)
    copy = pickle.loads(pickle.dumps(space))
    assert copy.tokens(range(7)).tolist() == space.tokens(range(7)).tolist()


def test_folders_from_different_tokenizers_are_refused(tmp_path: Path) -> None:
    for name, fingerprint in (("x", "aaaa"), ("y", "bbbb")):
        with ShardWriter(
            tmp_path / name, vocab_size=1000, eos_token_id=0, tokenizer_fingerprint=fingerprint
        ) as writer:
            writer.write([1, 2, 3], id="d", source="s")
    with pytest.raises(ValueError, match="different tokenizers"):
        InstanceSpace([tmp_path / "x", tmp_path / "y"], SEQ)


def test_check_vocab(two_folders: list[str]) -> None:
    space = InstanceSpace(two_folders, SEQ)
    space.check_vocab(1000)
    space.check_vocab(50280)
    with pytest.raises(
        ValueError, match=r"token shards in .*a were built with a vocabulary of 1000"
    ):
        space.check_vocab(999)
    # A manifest that records the largest id is checked against that id instead.
    manifest_path = Path(two_folders[1]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["max_token_id"] = 34
    manifest_path.write_text(json.dumps(manifest))
    only_b = InstanceSpace(two_folders[1:], SEQ)
    only_b.check_vocab(35)
    with pytest.raises(
        ValueError, match=r"token shards in .*b hold token id 34, outside the model's vocab_size=34"
    ):
        only_b.check_vocab(34)


def test_space_fingerprint_follows_the_manifests_not_the_location(
    two_folders: list[str], tmp_path: Path
) -> None:
    moved = [str(tmp_path / "moved" / Path(p).name) for p in two_folders]
    for source, target in zip(two_folders, moved, strict=True):
        shutil.copytree(source, target)
    fingerprint = InstanceSpace(two_folders, SEQ).fingerprint()
    assert len(fingerprint) == 64
    assert InstanceSpace(moved, SEQ).fingerprint() == fingerprint
    assert InstanceSpace(two_folders[::-1], SEQ).fingerprint() != fingerprint
    assert InstanceSpace(two_folders[:1], SEQ).fingerprint() != fingerprint


# ---------------------------------------------------------------------- permutations
def test_epoch_permutation_is_deterministic_and_differs_per_epoch() -> None:
    first = epoch_permutation(1000, seed=6198, epoch=0)
    assert first.dtype == np.uint32
    assert np.array_equal(first, epoch_permutation(1000, seed=6198, epoch=0))
    assert sorted(first.tolist()) == list(range(1000))
    assert not np.array_equal(first, epoch_permutation(1000, seed=6198, epoch=1))
    # Epoch e is seeded with seed + e, as in OLMo.
    assert np.array_equal(epoch_permutation(1000, 6198, 1), epoch_permutation(1000, 6199, 0))
    # The order is part of the run's record: a change here means new runs shuffle differently.
    assert epoch_permutation(10, seed=6198, epoch=0).tolist() == EXPECTED_PERMUTATION_10


EXPECTED_PERMUTATION_10 = [2, 4, 7, 3, 8, 9, 0, 6, 1, 5]  # NumPy 2.4


def test_global_indices_span_the_epoch_boundary() -> None:
    order = DataOrder(7, seed=3)
    perm0, perm1 = epoch_permutation(7, 3, 0), epoch_permutation(7, 3, 1)
    assert order.global_indices(0, 7).tolist() == perm0.tolist()
    spanning = order.global_indices(5, 5)
    assert spanning.dtype == np.int64
    assert spanning.tolist() == [*perm0[5:].tolist(), *perm1[:3].tolist()]
    assert [order.epoch_of(p) for p in (0, 6, 7, 13, 14)] == [0, 0, 1, 1, 2]
    # Several epochs in one read.
    assert order.global_indices(3, 15).tolist() == [
        *perm0[3:].tolist(),
        *perm1.tolist(),
        *epoch_permutation(7, 3, 2)[:4].tolist(),
    ]
    assert order.global_indices(4, 0).tolist() == []
    with pytest.raises(ValueError, match="num_instances=0"):
        DataOrder(0, seed=1)


def test_save_and_load_the_order(two_folders: list[str], tmp_path: Path) -> None:
    space = InstanceSpace(two_folders, SEQ)
    order = DataOrder.for_space(space, seed=11)
    run = tmp_path / "run"
    folder = order.save(run)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0.npy", "order.json"]
    order.save(run, through_epoch=1)
    info = json.loads((folder / "order.json").read_text())
    assert info["format_version"] == 1
    assert (info["seed"], info["num_instances"], info["sequence_length"]) == (11, 7, SEQ)
    assert info["folders"] == two_folders
    assert info["shards_fingerprint"] == space.fingerprint()
    assert info["epochs"] == [0, 1]
    assert np.array_equal(np.load(folder / "epoch-1.npy"), epoch_permutation(7, 11, 1))

    loaded = DataOrder.load(run, verify=True)
    assert sorted(loaded.saved_files) == [0, 1]
    assert loaded.global_indices(0, 30).tolist() == order.global_indices(0, 30).tolist()

    # The saved file is what the run used: it wins over a recomputation, and verify says so.
    tampered = np.load(folder / "epoch-0.npy")[::-1].copy()
    np.save(folder / "epoch-0.npy", tampered)
    assert DataOrder.load(run).global_indices(0, 7).tolist() == tampered.tolist()
    with pytest.raises(ValueError, match=r"epoch-0\.npy differs from its recomputation"):
        DataOrder.load(run, verify=True)

    with pytest.raises(ValueError, match="records seed=11, but this run's data order has seed=12"):
        DataOrder.for_space(space, seed=12).save(run)
    with pytest.raises(FileNotFoundError, match="no saved data order"):
        DataOrder.load(tmp_path / "elsewhere")


# ---------------------------------------------------------------------- ranks
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_rank_slices_reassemble_the_global_batch(world_size: int) -> None:
    batch = DataOrder(100, seed=0).global_indices(40, 16)
    slices = [rank_slice(batch, rank, world_size) for rank in range(world_size)]
    assert all(len(s) == 16 // world_size for s in slices)
    assert slices[0].tolist() == batch[::world_size].tolist()
    merged = np.empty_like(batch)
    for rank, part in enumerate(slices):
        merged[rank::world_size] = part
    assert merged.tolist() == batch.tolist()


def test_micro_batches_and_divisibility_errors() -> None:
    rank = np.arange(6)
    assert [m.tolist() for m in micro_batches(rank, 2)] == [[0, 1], [2, 3], [4, 5]]
    assert check_batch_divisibility(16, 2, 4) == 2
    with pytest.raises(
        ValueError,
        match=r"global batch of 10 instances is not divisible by micro_batch_size=2 x world_size=4 \(= 8\)",
    ):
        check_batch_divisibility(10, 2, 4)
    with pytest.raises(
        ValueError, match="6 instances per rank are not divisible by micro_batch_size=4"
    ):
        micro_batches(rank, 4)
    with pytest.raises(ValueError, match=r"rank=2 must be in 0\.\.1"):
        rank_slice(rank, 2, 2)
    with pytest.raises(
        ValueError, match="global batch of 6 instances is not divisible by world_size=4"
    ):
        rank_slice(rank, 0, 4)


# ---------------------------------------------------------------------- fingerprints
def test_batch_fingerprint() -> None:
    tokens = np.array([[1, 2, 3, 0], [50279, 7, 8, 9]], dtype=np.int64)
    expected = hashlib.sha256(
        np.array([1, 2, 3, 0, 50279, 7, 8, 9], dtype="<u4").tobytes()
    ).hexdigest()[:16]
    assert batch_fingerprint(tokens) == expected == "cd0b07466e26fb7c"
    assert batch_fingerprint(tokens.astype(np.uint16)) == expected
    changed = tokens.copy()
    changed[1, 3] = 10
    assert batch_fingerprint(changed) != expected
    assert batch_fingerprint(tokens[::-1]) != expected
    with pytest.raises(ValueError, match=r"shape \(batch, sequence\)"):
        batch_fingerprint(tokens.reshape(-1))


def test_for_run_creates_then_resumes_the_saved_order(
    two_folders: list[str], tmp_path: Path
) -> None:
    space = InstanceSpace(two_folders, SEQ)
    run = tmp_path / "run"
    created = DataOrder.for_run(run, space, seed=4)
    assert (run / "data_order" / "epoch-0.npy").is_file()
    assert created.differences(space, 4) == {}
    # Resuming reads the saved files, even where a recomputation would differ.
    saved = np.load(run / "data_order" / "epoch-0.npy")
    np.save(run / "data_order" / "epoch-0.npy", saved[::-1].copy())
    resumed = DataOrder.for_run(run, space, seed=4)
    assert resumed.global_indices(0, 7).tolist() == saved[::-1].tolist()
    # A fresh (recomputed) order may not silently continue a run that saved another one.
    with pytest.raises(ValueError, match=r"epoch-0\.npy differs from this data order's epoch 0"):
        DataOrder.for_space(space, seed=4).save(run)
    with pytest.raises(ValueError, match=r"another data order: seed 4 \(now 5\)"):
        DataOrder.for_run(run, space, seed=5)
    assert set(DataOrder(7, seed=4).differences(InstanceSpace(two_folders[:1], SEQ), 4)) == {
        "num_instances",
        "sequence_length",
        "shards_fingerprint",
    }
