"""The order-dependent taggers of a curation run: deduplication and decontamination.

They keep state across batches and sources (what has been seen), so the pipeline runs them in
the main process, on batches in input order: the first copy of anything is the one kept.

**Dedup state.** :meth:`StatefulTaggers.save` writes what a run has seen into a folder and
``StatefulTaggers(config, state=folder)`` starts the next run from it, so a new source is
deduplicated against an existing corpus (``olmo data curate --dedup-state DIR``). The folder
holds ``state.json`` (format, the ``dedup`` settings, documents seen per run, the filters'
fill and estimated false-positive rates) and one sub-folder per enabled part: ``dedup/``
(URL, text and paragraph Bloom filters), ``minhash/`` (the online method's band filters, or
the clusters method's signatures) and ``decontam/`` (the evaluation-paragraph index). Filters
cannot grow, so a state is only continued with the same ``dedup`` settings (the capacities
``expected_documents`` and ``expected_paragraphs`` must cover every run together).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from olmo_assets.curation.config import CurationConfig
from olmo_nn.config import ConfigError

__all__ = ["STATE_FILE", "OnlineMinHash", "StatefulTaggers"]

#: The manifest of a dedup state folder.
STATE_FILE = "state.json"
_STATE_FORMAT = "olmo-curation-dedup-state-v1"
_ONLINE_FORMAT = "olmo-minhash-online-v1"
_ONLINE_HEADER = "minhash.json"


def _mix_words(words: np.ndarray) -> np.ndarray:
    """One 64-bit hash per row of uint64 words (multiply-xorshift, wrapping arithmetic)."""
    multiplier = np.uint64(0x9E3779B97F4A7C15)
    state = np.full(words.shape[0], np.uint64(0x243F6A8885A308D3))
    for column in range(words.shape[1]):
        state = (state ^ words[:, column]) * multiplier
        state ^= state >> np.uint64(29)
    return state


class OnlineMinHash:
    """Single-pass fuzzy dedup: a document is a near-duplicate when one of its LSH bands was
    seen in an earlier document (MinHash over 5-word shingles, 14 bands x 8 rows).

    Bands go into one Bloom filter per band, so memory is fixed by ``capacity`` whatever the
    corpus size (the LSHBloom approach); a band false positive (rate 1e-6 per band at
    capacity) makes a false near-duplicate. Documents without words are never duplicates.
    Not transitive: a document is compared with every earlier one, removed or not, but two
    documents joined only through a third are not (``minhash_method: clusters`` joins them).
    """

    def __init__(self, *, capacity: int, false_positive_rate: float = 1e-6) -> None:
        from olmo_assets.curation.bloom import BloomFilter
        from olmo_assets.curation.minhash import MinHashConfig, MinHasher

        self.config = MinHashConfig()
        self.hasher = MinHasher(self.config)
        self.bands = [
            BloomFilter(expected_items=capacity, false_positive_rate=false_positive_rate)
            for _ in range(self.config.num_bands)
        ]

    def add_and_check(self, texts: list[str]) -> np.ndarray:
        from olmo_assets.curation.minhash import NO_SIGNATURE

        signatures = self.hasher.signatures(texts)  # (n, bands * rows) uint32
        has_words = ~(signatures == NO_SIGNATURE).all(axis=1)
        rows = self.config.rows_per_band
        duplicate = np.zeros(len(texts), dtype=bool)
        for band, bloom in enumerate(self.bands):
            block = np.ascontiguousarray(signatures[has_words, band * rows : (band + 1) * rows])
            keys = np.frombuffer(block.tobytes(), dtype=np.uint64).reshape(len(block), -1)
            seen = bloom.add_and_check(_mix_words(keys))
            duplicate[np.flatnonzero(has_words)] |= seen
        return duplicate

    def stats(self) -> dict[str, Any]:
        """The band filters' size and their worst fill and estimated false-positive rate."""
        return {
            "num_bands": len(self.bands),
            "band_filter_bytes": self.bands[0].stats()["num_bytes"],
            "max_fill_ratio": max(bloom.fill_ratio for bloom in self.bands),
            "max_estimated_false_positive_rate": max(
                bloom.estimated_false_positive_rate for bloom in self.bands
            ),
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the band filters and the MinHash config into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for band, bloom in enumerate(self.bands):
            bloom.save(directory / f"band-{band:02d}.bloom")
        header = {"format": _ONLINE_FORMAT, "config": asdict(self.config)}
        (directory / _ONLINE_HEADER).write_text(json.dumps(header, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> OnlineMinHash:
        """Continue from what :meth:`save` wrote."""
        from olmo_assets.curation.bloom import BloomFilter
        from olmo_assets.curation.minhash import MinHashConfig, MinHasher

        directory = Path(directory)
        header_path = directory / _ONLINE_HEADER
        if not header_path.is_file():
            raise FileNotFoundError(f"no saved MinHash band filters in {directory}")
        header = json.loads(header_path.read_text())
        if header.get("format") != _ONLINE_FORMAT:
            raise ValueError(
                f"{header_path} has format {header.get('format')!r}, not {_ONLINE_FORMAT!r}"
            )
        online = cls.__new__(cls)
        online.config = MinHashConfig(**header["config"])
        online.hasher = MinHasher(online.config)
        online.bands = [
            BloomFilter.load(directory / f"band-{band:02d}.bloom")
            for band in range(online.config.num_bands)
        ]
        return online


def _read_state(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the dedup state in ``directory``; None if there is none yet.

    A missing or empty folder has no state; a folder with other files and no ``state.json``
    is refused rather than taken over.
    """
    directory = Path(directory)
    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        return None
    manifest_path = directory / STATE_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{directory} exists but holds no dedup state (no {STATE_FILE}); pass a new folder "
            "or one written by --dedup-state"
        )
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    if manifest.get("format") != _STATE_FORMAT:
        raise ValueError(
            f"{manifest_path} has format {manifest.get('format')!r}; this code reads "
            f"{_STATE_FORMAT!r}"
        )
    return manifest


class StatefulTaggers:
    """Dedup (URL, exact text, paragraphs, MinHash) and Paloma decontamination, as configured.

    With ``state``, continue from a dedup state folder written by :meth:`save` (see the module
    docstring); its ``dedup`` settings must equal the config's. Without
    ``decontamination_paths``, the state's decontamination index (if it has one) is used.
    ``scratch`` is a folder for the clusters method's signatures (in memory without it).

    With ``dedup.minhash_method: clusters`` the ``minhash__is_duplicate`` attribute is not in
    :meth:`tag`'s output: :attr:`deferred` is true and :meth:`finish` gives it for the whole
    run once every batch has been tagged.
    """

    def __init__(
        self,
        config: CurationConfig,
        *,
        state: str | os.PathLike[str] | None = None,
        scratch: str | os.PathLike[str] | None = None,
    ) -> None:
        dedup = config.dedup
        self.settings = dedup.to_dict()
        manifest = _read_state(state) if state is not None else None
        loaded = Path(state) if state is not None and manifest is not None else None
        if manifest is not None:
            _check_settings(manifest, self.settings, loaded)
        #: The runs recorded in the state so far, and the documents each fed in per source.
        self.runs: list[dict[str, Any]] = list(manifest["runs"]) if manifest else []
        self.documents: dict[str, int] = {}
        self.dedup = None
        if dedup.url or dedup.exact or dedup.paragraphs:
            from olmo_assets.curation import dedup as dedup_module

            if loaded is not None:
                self.dedup = dedup_module.Deduplicator.load(loaded / "dedup")
            else:
                self.dedup = dedup_module.Deduplicator(
                    dedup_module.DedupConfig(
                        url=dedup.url,
                        exact=dedup.exact,
                        paragraphs=dedup.paragraphs,
                        false_positive_rate=dedup.false_positive_rate,
                        expected_documents=dedup.expected_documents,
                        expected_paragraphs=dedup.expected_paragraphs,
                    )
                )
        self.decontamination = None
        exempt = {source.name for source in config.sources if source.code}
        if config.decontamination_paths:
            from olmo_assets.curation.decontaminate import ContaminationIndex

            self.decontamination = ContaminationIndex.from_jsonl(
                config.decontamination_paths, exempt_sources=exempt
            )
        elif loaded is not None and (loaded / "decontam").is_dir():
            from olmo_assets.curation.decontaminate import ContaminationIndex

            self.decontamination = ContaminationIndex.load(loaded / "decontam")
            # The saved sources were an earlier run's; exempt this run's code sources.
            self.decontamination.exempt_sources = frozenset(exempt)

        self.fuzzy: OnlineMinHash | None = None
        self.clusters = None
        if dedup.minhash and dedup.minhash_method == "online":
            self.fuzzy = (
                OnlineMinHash.load(loaded / "minhash")
                if loaded is not None
                else OnlineMinHash(capacity=dedup.expected_documents)
            )
        elif dedup.minhash:
            from olmo_assets.curation.minhash import MinHashDeduplicator

            spill = None if scratch is None else Path(scratch) / "signatures.u32"
            self.clusters = (
                MinHashDeduplicator.load(loaded / "minhash", spill_path=spill)
                if loaded is not None
                else MinHashDeduplicator(spill_path=spill)
            )

    @property
    def active(self) -> bool:
        """Whether anything is deduplicated or decontaminated."""
        parts = (self.dedup, self.fuzzy, self.clusters, self.decontamination)
        return any(part is not None for part in parts)

    @property
    def deferred(self) -> bool:
        """Whether ``minhash__is_duplicate`` waits for :meth:`finish` (the clusters method)."""
        return self.clusters is not None

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        """Attributes of a batch (``id`` first), updating the state with it."""
        if docs.height:
            source = docs.get_column("source")[0]
            self.documents[source] = self.documents.get(source, 0) + docs.height
        attributes = docs.select("id")
        if self.dedup is not None:
            attributes = attributes.hstack(self.dedup.tag(docs).drop("id"))
        if self.fuzzy is not None:
            attributes = attributes.with_columns(
                pl.Series("minhash__is_duplicate", self.fuzzy.add_and_check(docs["text"].to_list()))
            )
        if self.clusters is not None:
            self.clusters.add(docs)
        if self.decontamination is not None:
            attributes = attributes.hstack(self.decontamination.tag(docs).drop("id"))
        return attributes

    def finish(self) -> pl.DataFrame | None:
        """``id`` and ``minhash__is_duplicate`` of every document :meth:`tag` saw, in order,
        for the clusters method (None otherwise)."""
        if self.clusters is None:
            return None
        return self.clusters.clusters().select("id", "minhash__is_duplicate")

    def stats(self) -> dict[str, Any]:
        """The filters' (and signatures') sizes, fill and estimated false-positive rates."""
        stats: dict[str, Any] = {}
        if self.dedup is not None:
            stats["dedup"] = self.dedup.stats()
        if self.fuzzy is not None:
            stats["minhash"] = self.fuzzy.stats()
        if self.clusters is not None:
            stats["minhash"] = self.clusters.stats()
        if self.decontamination is not None:
            stats["decontam"] = self.decontamination.stats()
        return stats

    def save(self, directory: str | os.PathLike[str], *, output: str) -> dict[str, Any]:
        """Write the state after this run (which wrote ``output``) into ``directory``.

        The caller makes it atomic (a fresh folder renamed into place). Returns the manifest.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.dedup is not None:
            self.dedup.save(directory / "dedup")
        if self.fuzzy is not None:
            self.fuzzy.save(directory / "minhash")
        if self.clusters is not None:
            self.clusters.save(directory / "minhash")
        if self.decontamination is not None:
            self.decontamination.save(directory / "decontam")
        runs = [*self.runs, {"output": output, "documents": dict(sorted(self.documents.items()))}]
        manifest = {
            "format": _STATE_FORMAT,
            "dedup": self.settings,
            "documents": sum(sum(run["documents"].values()) for run in runs),
            "runs": runs,
            "stats": self.stats(),
        }
        (directory / STATE_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest


def _check_settings(manifest: dict[str, Any], settings: dict[str, Any], state: Path | None) -> None:
    saved = manifest.get("dedup", {})
    differ = [key for key in settings if saved.get(key) != settings[key]]
    if differ:
        changes = "; ".join(
            f"{key}: {saved.get(key)!r} in the state, {settings[key]!r} in the config"
            for key in differ
        )
        raise ConfigError(
            f"the dedup state in {state} was made with other dedup settings ({changes}); its "
            "filters cannot be resized or re-keyed: use the same dedup settings or a new state"
        )
