"""The data order: which instances form each global batch, a pure function of (shards, seed, epoch).

* :class:`DataConfig` names the token-shard folders and the seed.
* :class:`InstanceSpace` concatenates the folders' fixed-length instances into one index
  space (folder 0's instances first) and maps any instance back to its folder and documents.
* :func:`epoch_permutation` shuffles that space once per epoch (epoch ``e`` is seeded with
  ``seed + e``, as in OLMo); :class:`DataOrder` reads the infinite sequence
  ``perm(0) ++ perm(1) ++ ...`` at any position and saves the permutations it used under
  ``RUN_DIR/data_order/``.

Positions count *instances consumed*: global batch ``k`` is ``global_indices(start_k, size_k)``
where ``start_k`` is the sum of the earlier batches' sizes. A rank takes the strided slice
``batch[rank::world_size]`` (:func:`rank_slice`) and cuts it into micro-batches, so the global
batch is the same instances for any number of GPUs or loader workers.
:func:`batch_fingerprint` hashes a global batch's tokens so a logged batch can be checked
against its reconstruction.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from olmo_nn.config import Config, ConfigError
from olmo_nn.data.instances import InstanceDataset, InstanceDocument

__all__ = [
    "DATA_ORDER_DIR",
    "ORDER_FILE",
    "ORDER_FORMAT_VERSION",
    "DataConfig",
    "DataOrder",
    "InstanceOrigin",
    "InstanceSpace",
    "batch_fingerprint",
    "check_batch_divisibility",
    "epoch_permutation",
    "micro_batches",
    "rank_slice",
]

#: Folder of the run directory that holds the saved data order.
DATA_ORDER_DIR = "data_order"
#: The data order's description inside :data:`DATA_ORDER_DIR`.
ORDER_FILE = "order.json"
ORDER_FORMAT_VERSION = 1
_PERMUTATION_RULE = (
    "numpy.random.Generator(numpy.random.PCG64(seed + epoch)).permutation(num_instances)"
)


def _check_folder_list(name: str, value: Any, *, allow_empty: bool) -> None:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(
            f"data.{name}={value!r} must be a list of token-shard folders, "
            f"e.g. {name}: [data/shards/train]"
        )
    if not value and not allow_empty:
        raise ConfigError(f"data.{name} is empty: name at least one token-shard folder")


@dataclass(kw_only=True)
class DataConfig(Config):
    """Training data: token-shard folders and the seed of their order."""

    paths: list[str]
    """Token-shard folders (``olmo data tokenize`` outputs), concatenated in this order into
    one instance space."""
    sequence_length: int | None = None
    """Tokens per instance; None: the model's ``max_sequence_length`` (resolved by the trainer)."""
    seed: int = 6198
    """Seed of the data order: epoch ``e`` is shuffled with ``seed + e``."""
    num_workers: int = 0
    """Loader worker processes that read batches ahead (0: read in the training process).
    Never changes which instances form a batch."""
    validation_paths: list[str] = field(default_factory=list)
    """Held-out token-shard folders for in-loop perplexity (empty: none)."""

    def __post_init__(self) -> None:
        _check_folder_list("paths", self.paths, allow_empty=False)
        _check_folder_list("validation_paths", self.validation_paths, allow_empty=True)
        if self.sequence_length is not None and self.sequence_length <= 0:
            raise ConfigError(
                f"data.sequence_length={self.sequence_length} must be a positive number of "
                "tokens, or null for the model's max_sequence_length"
            )
        if self.seed < 0:
            raise ConfigError(f"data.seed={self.seed} must be >= 0")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers={self.num_workers} must be >= 0")

    def resolve_sequence_length(self, max_sequence_length: int) -> int:
        """``sequence_length``, or the model's ``max_sequence_length`` when it is None."""
        length = self.sequence_length or max_sequence_length
        if length > max_sequence_length:
            raise ValueError(
                f"data.sequence_length={length} exceeds the model's "
                f"max_sequence_length={max_sequence_length}; shorten it or use a longer model"
            )
        return length

    def build(self, max_sequence_length: int) -> InstanceSpace:
        """The training instances, cut at the resolved sequence length."""
        return InstanceSpace(self.paths, self.resolve_sequence_length(max_sequence_length))

    def build_validation(self, max_sequence_length: int) -> InstanceSpace | None:
        """The held-out instances (same sequence length), or None without ``validation_paths``."""
        if not self.validation_paths:
            return None
        return InstanceSpace(
            self.validation_paths, self.resolve_sequence_length(max_sequence_length)
        )


@dataclass(frozen=True, slots=True)
class InstanceOrigin:
    """Where instance ``instance`` of an :class:`InstanceSpace` comes from."""

    instance: int
    """Global index in the instance space."""
    folder: str
    """The token-shard folder, as named in the paths."""
    folder_number: int
    """Position of that folder in the paths (0-based)."""
    local_instance: int
    """Index of the instance inside that folder's own instances."""
    documents: list[InstanceDocument]
    """The documents (or parts of them) in the window, in order."""


class InstanceSpace:
    """Fixed-length instances of several token-shard folders, indexed as one concatenation.

    ``space[i]`` is an ``int64`` copy of instance ``i``; :meth:`tokens` reads a batch of them.
    Folders are opened on construction (manifests and file sizes only); each folder's
    document index is read the first time one of its instances is traced to documents.
    Pickling keeps only the folder names, so loader worker processes reopen the memmaps.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], sequence_length: int) -> None:
        if not paths:
            raise ValueError("an instance space needs at least one token-shard folder")
        self.paths = [str(p) for p in paths]
        self.sequence_length = sequence_length
        self.datasets = [InstanceDataset(p, sequence_length) for p in self.paths]
        sizes = [len(d) for d in self.datasets]
        #: Global index of each folder's first instance (and the total at the end).
        self.folder_first_instance = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        fingerprints = {d.shards.tokenizer_fingerprint for d in self.datasets}
        if len(fingerprints) > 1:
            described = ", ".join(
                f"{p} ({d.shards.tokenizer_name!r}, {d.shards.tokenizer_fingerprint[:12]})"
                for p, d in zip(self.paths, self.datasets, strict=True)
            )
            raise ValueError(
                f"token-shard folders were built with different tokenizers: {described}; "
                "re-tokenize them with one tokenizer"
            )

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "sequence_length": self.sequence_length}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["paths"], state["sequence_length"])  # type: ignore[misc]

    def __len__(self) -> int:
        return int(self.folder_first_instance[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """``(folder number, instance index inside that folder)`` of global instance ``i``."""
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(
                f"instance {i} is out of range: {n} instances of {self.sequence_length} tokens "
                f"in {len(self.paths)} folder(s)"
            )
        folder = int(np.searchsorted(self.folder_first_instance, i, side="right")) - 1
        return folder, i - int(self.folder_first_instance[folder])

    def raw(self, i: int) -> np.ndarray:
        """Instance ``i`` as a read-only view of its token file (uint16 or uint32)."""
        folder, local = self.locate(int(i))
        return self.datasets[folder].raw(local)

    def __getitem__(self, i: int) -> np.ndarray:
        """Instance ``i`` as a new ``int64`` array of ``sequence_length`` ids."""
        return self.raw(i).astype(np.int64)

    def tokens(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The instances ``indices`` as one ``int64`` array of shape (len(indices), sequence_length)."""
        out = np.empty((len(indices), self.sequence_length), dtype=np.int64)
        for row, i in enumerate(indices):
            out[row] = self.raw(int(i))
        return out

    def documents_in_instance(self, i: int) -> InstanceOrigin:
        """Instance ``i``'s folder, its index there, and the documents it holds."""
        folder, local = self.locate(int(i))
        return InstanceOrigin(
            instance=int(i),
            folder=self.paths[folder],
            folder_number=folder,
            local_instance=local,
            documents=self.datasets[folder].documents_in_instance(local),
        )

    def check_vocab(self, vocab_size: int) -> None:
        """Raise ``ValueError`` naming the folder whose token ids may not fit ``vocab_size``.

        Uses the largest token id when the manifest records one (``max_token_id``), else the
        vocabulary size of the tokenizer the shards were built with.
        """
        for path, dataset in zip(self.paths, self.datasets, strict=True):
            manifest = dataset.shards.manifest
            largest = manifest.get("max_token_id", manifest["tokenizer"].get("max_token_id"))
            if largest is not None:
                if int(largest) >= vocab_size:
                    raise ValueError(
                        f"token shards in {path} hold token id {int(largest)}, outside the "
                        f"model's vocab_size={vocab_size}; use a model with vocab_size > "
                        f"{int(largest)} or shards from the model's tokenizer"
                    )
            elif dataset.shards.vocab_size > vocab_size:
                raise ValueError(
                    f"token shards in {path} were built with a vocabulary of "
                    f"{dataset.shards.vocab_size} ids (tokenizer "
                    f"{dataset.shards.tokenizer_name!r}), more than the model's "
                    f"vocab_size={vocab_size}; use a model with vocab_size >= "
                    f"{dataset.shards.vocab_size} or shards from the model's tokenizer"
                )

    def fingerprint(self) -> str:
        """sha256 of the folders' manifests (files, token counts, checksums, tokenizer, dtype).

        The same shards give the same fingerprint wherever the folders live.
        """
        described = [
            {
                "tokenizer_fingerprint": d.shards.tokenizer_fingerprint,
                "dtype": d.shards.dtype.name,
                "files": [
                    [f["path"], f["num_tokens"], f.get("sha256", "")]
                    for f in d.shards.manifest["files"]
                ],
            }
            for d in self.datasets
        ]
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    def __repr__(self) -> str:
        return (
            f"InstanceSpace({self.paths!r}, sequence_length={self.sequence_length}, "
            f"num_instances={len(self)})"
        )


def epoch_permutation(num_instances: int, seed: int, epoch: int) -> np.ndarray:
    """The order of all instances in ``epoch``: a permutation seeded with ``seed + epoch``.

    uint32 when the indices fit, else uint64.
    """
    if num_instances <= 0:
        raise ValueError(f"num_instances={num_instances}: there is nothing to order")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed={seed} and epoch={epoch} must be >= 0")
    generator = np.random.Generator(np.random.PCG64(seed + epoch))
    dtype = np.uint32 if num_instances <= 1 << 32 else np.uint64
    return generator.permutation(num_instances).astype(dtype)


class DataOrder:
    """The infinite instance sequence ``perm(0) ++ perm(1) ++ ...`` of an instance space.

    A permutation is computed on first use (or read from the run directory when the order
    was :meth:`load`-ed) and the two most recent are kept in memory.
    """

    def __init__(
        self,
        num_instances: int,
        seed: int,
        *,
        sequence_length: int | None = None,
        folders: Sequence[str] = (),
        shards_fingerprint: str = "",
    ) -> None:
        if num_instances <= 0:
            raise ValueError(
                f"num_instances={num_instances}: the shards hold no complete instance; "
                "use more data or a shorter sequence_length"
            )
        if seed < 0:
            raise ValueError(f"seed={seed} must be >= 0")
        self.num_instances = num_instances
        self.seed = seed
        self.sequence_length = sequence_length
        self.folders = list(folders)
        self.shards_fingerprint = shards_fingerprint
        #: Epoch files read by :meth:`load` (memory-mapped on use).
        self.saved_files: dict[int, Path] = {}
        self._cache: dict[int, np.ndarray] = {}

    @classmethod
    def for_space(cls, space: InstanceSpace, seed: int) -> DataOrder:
        """The order of ``space``'s instances under ``seed``, recording its folders and fingerprint."""
        return cls(
            len(space),
            seed,
            sequence_length=space.sequence_length,
            folders=space.paths,
            shards_fingerprint=space.fingerprint(),
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    # ------------------------------------------------------------------ positions
    def epoch_of(self, position: int) -> int:
        """The epoch that global position ``position`` (instances consumed before it) falls in."""
        if position < 0:
            raise ValueError(f"position={position} must be >= 0")
        return position // self.num_instances

    def permutation(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s permutation (saved one if loaded, else computed)."""
        cached = self._cache.get(epoch)
        if cached is not None:
            return cached
        if epoch in self.saved_files:
            permutation = np.load(self.saved_files[epoch], mmap_mode="r")
        else:
            permutation = epoch_permutation(self.num_instances, self.seed, epoch)
        if len(self._cache) >= 2:
            self._cache.pop(min(self._cache))
        self._cache[epoch] = permutation
        return permutation

    def global_indices(self, start: int, count: int) -> np.ndarray:
        """Instance indices (int64) at positions ``[start, start + count)``; may span epochs."""
        if start < 0 or count < 0:
            raise ValueError(f"start={start} and count={count} must be >= 0")
        out = np.empty(count, dtype=np.int64)
        filled = 0
        while filled < count:
            epoch, offset = divmod(start + filled, self.num_instances)
            take = min(self.num_instances - offset, count - filled)
            out[filled : filled + take] = self.permutation(epoch)[offset : offset + take]
            filled += take
        return out

    # ------------------------------------------------------------------ saving
    def describe(self, epochs: Sequence[int]) -> dict[str, Any]:
        """What ``order.json`` holds."""
        return {
            "format": "olmo-data-order",
            "format_version": ORDER_FORMAT_VERSION,
            "seed": self.seed,
            "num_instances": self.num_instances,
            "sequence_length": self.sequence_length,
            "folders": self.folders,
            "shards_fingerprint": self.shards_fingerprint,
            "permutation": _PERMUTATION_RULE,
            "numpy_version": np.__version__,
            "epochs": sorted(epochs),
        }

    def save(self, run_dir: str | os.PathLike[str], *, through_epoch: int = 0) -> Path:
        """Write epochs ``0..through_epoch`` to ``RUN_DIR/data_order/epoch-{e}.npy`` and ``order.json``.

        Call it before training starts and again whenever a batch enters a new epoch
        (:meth:`epoch_of` of the batch's last position). Epoch files already there are kept;
        a run directory holding a different order (seed, instances, shards) is refused.
        Returns the ``data_order`` folder.
        """
        folder = Path(run_dir) / DATA_ORDER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        order_path = folder / ORDER_FILE
        if order_path.is_file():
            existing = json.loads(order_path.read_text(encoding="utf-8"))
            for key in ("seed", "num_instances", "sequence_length", "shards_fingerprint"):
                if existing.get(key) != getattr(self, key):
                    raise ValueError(
                        f"{order_path} records {key}={existing.get(key)!r}, but this run's data "
                        f"order has {key}={getattr(self, key)!r}; use a new run directory "
                        "(a run keeps one data order)"
                    )
        for epoch in range(through_epoch + 1):
            path = folder / f"epoch-{epoch}.npy"
            if path.is_file():
                if epoch not in self.saved_files:
                    self._check_saved_epoch(path, epoch)
                continue
            tmp = folder / f".epoch-{epoch}.npy.tmp-{os.getpid()}"
            with tmp.open("wb") as handle:
                np.save(handle, np.asarray(self.permutation(epoch)))
            tmp.replace(path)
            self.saved_files[epoch] = path
        saved = sorted(
            int(p.name[len("epoch-") : -len(".npy")]) for p in folder.glob("epoch-*.npy")
        )
        tmp = folder / f".{ORDER_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self.describe(saved), indent=2) + "\n", encoding="utf-8")
        tmp.replace(order_path)
        return folder

    def _check_saved_epoch(self, path: Path, epoch: int) -> None:
        """Refuse to continue with a permutation that differs from the one the run saved."""
        if not np.array_equal(np.load(path, mmap_mode="r"), self.permutation(epoch)):
            raise ValueError(
                f"{path} differs from this data order's epoch {epoch}; resume with "
                "DataOrder.load(run_dir) (or DataOrder.for_run) so the run keeps its saved order"
            )
        self.saved_files[epoch] = path

    def differences(self, space: InstanceSpace, seed: int) -> dict[str, tuple[Any, Any]]:
        """``{key: (this order's value, the space's / seed's value)}`` for every mismatch.

        Keys: ``seed``, ``num_instances``, ``sequence_length``, ``shards_fingerprint``.
        """
        current = {
            "seed": seed,
            "num_instances": len(space),
            "sequence_length": space.sequence_length,
            "shards_fingerprint": space.fingerprint(),
        }
        return {
            key: (getattr(self, key), value)
            for key, value in current.items()
            if getattr(self, key) != value
        }

    @classmethod
    def for_run(cls, run_dir: str | os.PathLike[str], space: InstanceSpace, seed: int) -> DataOrder:
        """The run's order: the one saved in ``run_dir`` when resuming, else a new one.

        Either way epoch 0 is saved before returning. A saved order that does not match
        ``space`` and ``seed`` (other shards, sequence length or seed) raises ``ValueError``.
        Call it on one process (rank 0) and let the others use :meth:`for_space` or
        :meth:`load` after a barrier.
        """
        if (Path(run_dir) / DATA_ORDER_DIR / ORDER_FILE).is_file():
            order = cls.load(run_dir)
            mismatches = order.differences(space, seed)
            if mismatches:
                described = ", ".join(
                    f"{key} {saved!r} (now {now!r})" for key, (saved, now) in mismatches.items()
                )
                raise ValueError(
                    f"{run_dir} was trained with another data order: {described}; resume with "
                    "the same data and seed, or start a new run directory"
                )
        else:
            order = cls.for_space(space, seed)
        order.save(run_dir)
        return order

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str], *, verify: bool = False) -> DataOrder:
        """The order saved in ``RUN_DIR/data_order``; saved epochs are read from their files.

        Epochs that were not saved are recomputed. ``verify=True`` also recomputes every
        saved epoch and raises ``ValueError`` if one differs (e.g. another NumPy changed
        the shuffle); the saved files are what the run used either way.
        """
        folder = Path(run_dir) / DATA_ORDER_DIR
        order_path = folder / ORDER_FILE
        if not order_path.is_file():
            raise FileNotFoundError(
                f"{run_dir} holds no saved data order ({DATA_ORDER_DIR}/{ORDER_FILE}); "
                "is it a training run directory?"
            )
        info = json.loads(order_path.read_text(encoding="utf-8"))
        if info.get("format_version") != ORDER_FORMAT_VERSION:
            raise ValueError(
                f"{order_path}: format_version {info.get('format_version')!r} is not supported "
                f"(expected {ORDER_FORMAT_VERSION})"
            )
        order = cls(
            int(info["num_instances"]),
            int(info["seed"]),
            sequence_length=info.get("sequence_length"),
            folders=info.get("folders", []),
            shards_fingerprint=info.get("shards_fingerprint", ""),
        )
        for epoch in info.get("epochs", []):
            path = folder / f"epoch-{epoch}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path} named in {order_path} is missing")
            saved = np.load(path, mmap_mode="r")
            if saved.shape != (order.num_instances,):
                raise ValueError(
                    f"{path} holds {saved.shape} indices, expected ({order.num_instances},)"
                )
            order.saved_files[int(epoch)] = path
            if verify and not np.array_equal(
                saved, epoch_permutation(order.num_instances, order.seed, int(epoch))
            ):
                raise ValueError(
                    f"{path} differs from its recomputation with NumPy {np.__version__} "
                    f"(saved with NumPy {info.get('numpy_version')}); the saved file is the "
                    "order the run used"
                )
        return order

    def __repr__(self) -> str:
        return f"DataOrder(num_instances={self.num_instances}, seed={self.seed})"


# ---------------------------------------------------------------------- ranks and micro-batches
def check_batch_divisibility(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches per rank per step; ``ValueError`` with the numbers when they do not divide."""
    if global_batch_size <= 0 or micro_batch_size <= 0 or world_size <= 0:
        raise ValueError(
            f"global_batch_size={global_batch_size}, micro_batch_size={micro_batch_size} and "
            f"world_size={world_size} must be positive"
        )
    per_round = micro_batch_size * world_size
    if global_batch_size % per_round:
        raise ValueError(
            f"global batch of {global_batch_size} instances is not divisible by "
            f"micro_batch_size={micro_batch_size} x world_size={world_size} (= {per_round}); "
            "change the batch size, the micro-batch size or the number of processes"
        )
    return global_batch_size // per_round


def rank_slice(global_batch_indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of a global batch: the strided slice ``indices[rank::world_size]``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in 0..{world_size - 1} (world_size={world_size})")
    if len(global_batch_indices) % world_size:
        raise ValueError(
            f"global batch of {len(global_batch_indices)} instances is not divisible by "
            f"world_size={world_size}"
        )
    return global_batch_indices[rank::world_size]


def micro_batches(rank_indices: np.ndarray, micro_batch_size: int) -> list[np.ndarray]:
    """A rank's instances cut into consecutive micro-batches of ``micro_batch_size``."""
    if micro_batch_size <= 0 or len(rank_indices) % micro_batch_size:
        raise ValueError(
            f"{len(rank_indices)} instances per rank are not divisible by "
            f"micro_batch_size={micro_batch_size}"
        )
    return [
        rank_indices[i : i + micro_batch_size]
        for i in range(0, len(rank_indices), micro_batch_size)
    ]


def batch_fingerprint(tokens: np.ndarray) -> str:
    """First 16 hex digits of the sha256 of a global batch's ids as little-endian uint32.

    ``tokens`` is (B, T) in global-batch order, so any process that knows the batch's
    instance indices can recompute it from the shards.
    """
    array = np.asarray(tokens)
    if array.ndim != 2:
        raise ValueError(f"expected token ids of shape (batch, sequence), got {array.shape}")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= 1 << 32):
        raise ValueError("token ids must lie in 0..2**32-1 to be fingerprinted")
    data = np.ascontiguousarray(array, dtype="<u4").tobytes()
    return hashlib.sha256(data).hexdigest()[:16]
