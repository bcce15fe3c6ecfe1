"""Curation throughput: ``olmo data tag`` against ``dolma tag`` and datatrove, and the full chain
per stage, side by side in one run (benchmarks/harness.py).

    .venv/bin/python benchmarks/curation_throughput.py [--mb 30] [--processes 2] [--repeats 3]
        [--slow-repeats 2] [--core-mb 2] [--datatrove-files 2]

The corpus is real text this machine has, written once in Dolma's layout
(``DIR/documents/*.jsonl.gz``, files of about ``--file-mb`` MB so every process has work) and
read by every tool: prose first (the Python documentation topics, the installed packages' long
descriptions, the multilingual samples, then the ``.rst``/``.md`` documentation files under the
standard library and site-packages) up to half of ``--mb``, then the standard library's Python
source (code, its non-empty files) for the rest, as far as there is some. Its composition is
recorded in the results' ``inputs``.

Rows (ratio = the peer's time / ours, same run, interleaved, median of the timed runs; each
side's CPU seconds too, ``cpu_ratio``, which a busy machine disturbs less than wall time):

* taggers, whole command, same files, ``--processes`` processes each: ``olmo data tag --taggers
  gopher,c4,pii`` against ``dolma tag --taggers gopher_v1 c4_v1 pii_regex_v1`` (both tag every
  document and write attributes), on the whole corpus and on its prose part alone;
* the same on the standard library's ``email`` package as it is: Dolma 1.2.1's PII tagger
  divides by the number of words, so its empty ``__init__.py`` ends Dolma's run with
  ``ZeroDivisionError``; the failure and its lines are recorded;
* the same taggers against datatrove (``benchmarks/peers/datatrove_filters.py``): Gopher
  repetition and quality filters, the C4 quality filter and the PII formatter in a
  ``LocalPipelineExecutor`` writing the kept documents, on ``--datatrove-files`` files of the
  corpus (half prose, half code; its Gopher repetition filter makes it the slowest side).
  datatrove filters: a document a filter drops is not seen by the later steps, so it computes
  less than a tagger that measures every document;
* taggers, core call, one process each: our three taggers' ``tag`` on the documents already
  loaded (a Polars frame, one Polars thread) against Dolma's three tagger classes' ``predict``
  on the same documents already loaded (``benchmarks/peers/dolma_taggers.py``), each timed
  inside its process (``--core-mb`` of the prose part, to keep Dolma within the budget);
* the full chain, ``olmo data curate`` (the default ``dolma_v1_5`` mix: length, language ID,
  Gopher, C4, PII, URL/exact/paragraph dedup, the mix with span replacement) against ``dolma
  tag`` with the three taggers only, on the prose part. The chain's stages run as their own
  commands in the same rounds (``olmo data tag`` with the mix's taggers, ``olmo data dedup``,
  ``olmo data mix``, ``olmo data mix --tokenize``): their times and MB/s are in the results'
  ``stages``.

Ours get one untimed warm-up run per comparison; the Dolma and datatrove whole commands do not
(they take tens of seconds, and the files are already in the page cache).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
from harness import (
    DOLMA_VENV,
    ROOT,
    Side,
    compare,
    peer_python,
    row,
    versions,
    write_results,
)

from olmo_assets.curation.local_sources import (
    code_documents,
    markdown_documents,
    multilingual_documents,
    prose_documents,
)
from olmo_assets.curation.pipeline import build_tagger

OLMO = str(Path(sys.executable).with_name("olmo"))
PEERS = ROOT / "benchmarks" / "peers"
OUR_TAGGERS = ["gopher", "c4", "pii"]
DOLMA_TAGGERS = ["gopher_v1", "c4_v1", "pii_regex_v1"]
Document = dict[str, Any]


# --------------------------------------------------------------------------- corpus
def _documentation_files() -> Iterator[Document]:
    """The ``.rst`` and ``.md`` documentation files under the standard library and
    site-packages (reST / markdown prose: package docs, command examples), sorted."""
    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]}
    seen: set[Path] = set()
    for root in sorted(Path(r) for r in roots):
        for path in sorted(root.rglob("*")):
            if path.suffix not in (".rst", ".md") or not path.is_file():
                continue
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if len(text.strip()) < 200:
                continue
            yield {
                "id": f"docfile/{path.relative_to(root).as_posix()}",
                "text": text,
                "source": "docfiles",
                "metadata": {"path": path.relative_to(root).as_posix()},
            }


def _prose() -> Iterator[Document]:
    yield from prose_documents()
    yield from markdown_documents()
    yield from multilingual_documents()
    yield from _documentation_files()


def build_corpus(folder: Path, megabytes: float, file_mb: float) -> dict[str, Any]:
    """Write ``folder/documents/{prose,code}-NNNNN.jsonl.gz`` (prose up to half of the size,
    code for the rest) and ``folder/prose/documents/`` (links to the prose files); returns
    the composition."""
    budget = int(megabytes * 1e6)
    documents = folder / "corpus" / "documents"
    documents.mkdir(parents=True)
    composition: dict[str, Any] = {}
    total = 0

    def write(kind: str, docs: Iterator[Document], limit: int) -> None:
        nonlocal total
        index = written = 0
        counts: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        out: Any = None
        for doc in docs:
            if out is None:
                path = documents / f"{kind}-{index:05d}.jsonl.gz"
                out = gzip.open(path, "wt", encoding="utf-8")  # noqa: SIM115 (closed below)
            out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            size = len(doc["text"].encode("utf-8"))
            written += size
            counts[doc["source"]] += 1
            sizes[doc["source"]] += size
            if written >= (index + 1) * file_mb * 1e6:
                out.close()
                out, index = None, index + 1
            if written >= limit:
                break
        if out is not None:
            out.close()
        total += written
        composition[kind] = {
            "megabytes": round(written / 1e6, 2),
            "files": len(list(documents.glob(f"{kind}-*.jsonl.gz"))),
            "by_source": {
                name: {"documents": counts[name], "megabytes": round(sizes[name] / 1e6, 2)}
                for name in sorted(counts)
            },
        }

    write("prose", _prose(), budget // 2)
    write("code", code_documents(), budget - total)
    prose = folder / "prose" / "documents"
    prose.mkdir(parents=True)
    for path in sorted(documents.glob("prose-*.jsonl.gz")):
        (prose / path.name).symlink_to(path)
    composition["total_megabytes"] = round(total / 1e6, 2)
    return composition


def build_probe(folder: Path) -> dict[str, Any]:
    """``folder/documents/email-00000.jsonl.gz``: the standard library's ``email`` package,
    every ``.py`` file as it is (empty ``__init__.py`` files included, as in any crawl of
    source code); returns what it holds."""
    root = Path(sysconfig.get_paths()["stdlib"])
    documents = folder / "documents"
    documents.mkdir(parents=True)
    paths = sorted((root / "email").rglob("*.py"))
    without_words = []
    with gzip.open(documents / "email-00000.jsonl.gz", "wt", encoding="utf-8") as out:
        for path in paths:
            relative = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            if not text.split():
                without_words.append(relative)
            record = {"id": f"stdlib/{relative}", "text": text, "source": "code"}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"documents": len(paths), "without_words": without_words}


def load_documents(folder: Path, megabytes: float | None = None) -> list[Document]:
    """The documents of ``folder``'s files in order (up to ``megabytes`` of text)."""
    out: list[Document] = []
    size = 0
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                doc = json.loads(line)
                out.append(doc)
                size += len(doc["text"].encode("utf-8"))
                if megabytes is not None and size >= megabytes * 1e6:
                    return out
    return out


def text_megabytes(docs: list[Document]) -> float:
    return sum(len(d["text"].encode("utf-8")) for d in docs) / 1e6


# --------------------------------------------------------------------------- sides
def _clean(*paths: Path) -> Callable[[], None]:
    def clean() -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    return clean


def ours_command(stage: str, source: Path, output: Path, *extra: str) -> Side:
    argv = [OLMO, "data", stage, "--source", f"corpus={source}", "--output", str(output), *extra]
    return Side(f"olmo data {stage}", argv=argv, before=_clean(output))


def dolma_tag(name: str, corpus: Path, processes: int) -> Side:
    """``dolma tag`` as its users run it; it writes ``corpus/attributes/<experiment>/``."""
    argv = [
        str(DOLMA_VENV / "bin" / "dolma"),
        "tag",
        "--documents",
        str(corpus / "documents" / "*.jsonl.gz"),
        "--experiment",
        "bench",
        "--taggers",
        *DOLMA_TAGGERS,
        "--processes",
        str(processes),
    ]
    return Side(name, argv=argv, before=_clean(corpus / "attributes"), warmup=False)


def our_core_call(documents: Path) -> None:
    """Our side of the core call, in its own process with one Polars thread (Dolma's taggers
    are single-threaded): load ``documents`` (jsonl), then time the three taggers' ``tag``."""
    with documents.open(encoding="utf-8") as lines:
        docs = [json.loads(line) for line in lines if line.strip()]
    frame = pl.DataFrame(
        {
            "id": [d["id"] for d in docs],
            "text": [d["text"] for d in docs],
            "source": [d["source"] for d in docs],
        }
    )
    taggers = [build_tagger(name) for name in OUR_TAGGERS]
    start = time.perf_counter()
    columns = sum(tagger.tag(frame).width - 1 for tagger in taggers)
    seconds = time.perf_counter() - start
    print(f"tagged {frame.height} documents with {', '.join(OUR_TAGGERS)}: {columns} columns")
    print(f"core seconds: {seconds:.4f}")


def _failure_lines(side: Side) -> list[str]:
    """The lines of a side's failed runs that name the error (Dolma prints its worker's
    traceback, then its progress thread's)."""
    lines: list[str] = []
    for run in side.runs:
        if run.ok:
            continue
        for line in run.output_tail.splitlines():
            if re.search(r"^\w*(Error|Exception)\b|DolmaFatalError", line) and line not in lines:
                lines.append(line.strip())
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=30.0, help="corpus size, MB of text")
    parser.add_argument("--file-mb", type=float, default=2.0, help="MB of text per input file")
    parser.add_argument("--processes", type=int, default=2, help="processes of every tool")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of fast sides")
    parser.add_argument(
        "--slow-repeats", type=int, default=2, help="timed runs of the comparisons with Dolma"
    )
    parser.add_argument(
        "--core-mb", type=float, default=2.0, help="MB of prose for the core-call comparison"
    )
    parser.add_argument(
        "--datatrove-files", type=int, default=2, help="corpus files for the datatrove comparison"
    )
    parser.add_argument("--keep", type=Path, help="build the corpus and outputs here, and keep")
    parser.add_argument("--core", type=Path, help=argparse.SUPPRESS)  # our core call's process
    args = parser.parse_args()
    if args.core is not None:
        our_core_call(args.core)
        return
    dolma_python = peer_python(DOLMA_VENV)
    bench_python = peer_python()

    with tempfile.TemporaryDirectory(prefix="curation-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"corpus: building {args.mb:g} MB under {work}", flush=True)
        composition = build_corpus(work, args.mb, args.file_mb)
        corpus, prose = work / "corpus", work / "prose"
        total_mb = composition["total_megabytes"]
        prose_mb = composition["prose"]["megabytes"]
        print(f"corpus: {json.dumps(composition)}", flush=True)
        out = work / "out"
        workers = ["--workers", str(args.processes)]
        taggers = ["--taggers", ",".join(OUR_TAGGERS)]

        # 1. Taggers on the whole corpus, whole commands: ours against Dolma.
        print("taggers, whole corpus (prose + code), whole command", flush=True)
        ours_full = ours_command("tag", corpus / "documents", out / "tag-full", *taggers, *workers)
        dolma_full = dolma_tag("dolma tag", corpus, args.processes)
        compare([ours_full, dolma_full], repeats=args.slow_repeats)

        # 2. Against datatrove, on a sample (its Gopher repetition filter is the slowest side).
        print(f"taggers, {args.datatrove_files} prose + code files, whole command", flush=True)
        sample = work / "sample" / "documents"
        sample.mkdir(parents=True)
        for kind in ("prose", "code"):
            for path in sorted((corpus / "documents").glob(f"{kind}-*.jsonl.gz"))[
                : args.datatrove_files // 2
            ]:
                (sample / path.name).symlink_to(path)
        sample_files = list(sample.iterdir())
        sample_mb = text_megabytes(load_documents(sample))
        ours_sample = ours_command("tag", sample, out / "tag-sample", *taggers, *workers)
        datatrove = Side(
            "datatrove filters",
            argv=[
                str(bench_python),
                str(PEERS / "datatrove_filters.py"),
                str(sample),
                str(out / "datatrove"),
                "--processes",
                str(args.processes),
            ],
            before=_clean(out / "datatrove", out / "datatrove.logs"),
            warmup=False,
        )
        compare([ours_sample, datatrove], repeats=args.slow_repeats)

        # 3. The standard library's source as it is: Dolma's PII tagger divides by the number of
        # words, so a file without words (an empty __init__.py) ends the whole run.
        print("taggers, the email package's sources as they are, whole command", flush=True)
        probe = work / "probe"
        probe_info = build_probe(probe)
        ours_probe = ours_command("tag", probe / "documents", out / "tag-probe", *taggers, *workers)
        dolma_probe = dolma_tag("dolma tag", probe, args.processes)
        compare([ours_probe, dolma_probe], repeats=1)

        # 4. Core call: the three taggers on loaded documents, one process each.
        print("taggers, core call, one process", flush=True)
        core_docs = load_documents(prose / "documents", args.core_mb)
        core_mb = text_megabytes(core_docs)
        core_file = work / "core.jsonl"
        core_file.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in core_docs))
        ours_core = Side(
            "our taggers",
            argv=[sys.executable, __file__, "--core", str(core_file)],
            env={"POLARS_MAX_THREADS": "1"},
            reported_seconds=r"core seconds: ([0-9.]+)",
        )
        dolma_core = Side(
            "dolma taggers",
            argv=[str(dolma_python), str(PEERS / "dolma_taggers.py"), str(core_file)],
            reported_seconds=r"core seconds: ([0-9.]+)",
        )
        compare([ours_core, dolma_core], repeats=args.repeats)

        # 5. The prose part: the taggers against Dolma, and the full chain stage by stage.
        print("prose part: taggers, the full chain and its stages, whole command", flush=True)
        source = prose / "documents"
        ours_prose = ours_command("tag", source, out / "tag-prose", *taggers, *workers)
        ours_prose.name = "olmo data tag gopher,c4,pii"
        dolma_prose = dolma_tag("dolma tag", prose, args.processes)
        tag = ours_command("tag", source, out / "tag", *workers)
        dedup = ours_command("dedup", source, out / "dedup", *workers)
        mix_argv = ["--attributes", str(out / "tag"), str(out / "dedup"), *workers]
        mix = ours_command("mix", source, out / "mix", *mix_argv)
        mix_tok = ours_command("mix", source, out / "mix-tokenize", *mix_argv, "--tokenize")
        mix_tok.name = "olmo data mix --tokenize"
        curate = ours_command("curate", source, out / "curate", *workers)
        # In each round tag and dedup run before the mixes, which read their attributes.
        compare(
            [ours_prose, dolma_prose, tag, dedup, mix, mix_tok, curate], repeats=args.slow_repeats
        )

    def stage(side: Side, what: str) -> dict[str, Any]:
        record = side.record()
        if "seconds" in record:
            record["megabytes_per_second"] = round(prose_mb / record["seconds"], 2)
        record["what"] = what
        return record

    stages = {
        "tag": stage(tag, "olmo data tag: the mix's taggers (length, language, gopher, c4, pii)"),
        "dedup": stage(dedup, "olmo data dedup: URL, exact and paragraph Bloom filters"),
        "mix": stage(mix, "olmo data mix: rules, span replacement, writing documents"),
        "mix_tokenize": stage(mix_tok, "olmo data mix --tokenize: the mix plus token shards"),
        "curate": stage(curate, "olmo data curate: every stage in one pass"),
    }
    for name, record in stages.items():
        rate = record.get("megabytes_per_second", "failed")
        print(f"  stage {name:<13} {record.get('seconds', 'failed')} s  {rate} MB/s")

    rows = [
        row(
            work=f"`olmo data tag` gopher+c4+pii vs `dolma tag` gopher_v1 c4_v1 pii_regex_v1, "
            f"{total_mb:.0f} MB real prose + code, {args.processes} processes",
            measure="whole command",
            ours=ours_full,
            peer=dolma_full,
            goal=10.0,
            unit_of_work=total_mb,
            unit="MB",
        ),
        row(
            work=f"`olmo data tag` gopher+c4+pii vs `dolma tag` gopher_v1 c4_v1 pii_regex_v1, "
            f"the {prose_mb:.0f} MB prose part only, "
            f"{args.processes} processes",
            measure="whole command",
            ours=ours_prose,
            peer=dolma_prose,
            goal=10.0,
            unit_of_work=prose_mb,
            unit="MB",
        ),
        row(
            work=f"`olmo data tag` gopher+c4+pii vs datatrove Gopher repetition+quality, C4, PII "
            f"(filters: dropped documents skip later steps), {sample_mb:.1f} MB of the corpus "
            f"({args.datatrove_files} files, half prose, half code), {args.processes} processes",
            measure="whole command",
            ours=ours_sample,
            peer=datatrove,
            unit_of_work=sample_mb,
            unit="MB",
        ),
        row(
            work=f"`olmo data tag` gopher+c4+pii vs `dolma tag`, the standard library's `email` "
            f"package as it is ({probe_info['documents']} files, "
            f"{len(probe_info['without_words'])} without words, an empty `__init__.py`), "
            f"{args.processes} processes",
            measure="whole command",
            ours=ours_probe,
            peer=dolma_probe,
            extra={
                "files_without_words": probe_info["without_words"],
                "peer_failure": _failure_lines(dolma_probe),
            },
        ),
        row(
            work=f"gopher+c4+pii taggers vs Dolma's gopher_v1 c4_v1 pii_regex_v1 classes, "
            f"{core_mb:.1f} MB of prose loaded, one process",
            measure="core call",
            ours=ours_core,
            peer=dolma_core,
            unit_of_work=core_mb,
            unit="MB",
        ),
        row(
            work=f"`olmo data curate` full chain (dolma_v1_5 mix) vs `dolma tag` three taggers "
            f"only, the {prose_mb:.0f} MB prose part, {args.processes} processes",
            measure="whole command",
            ours=curate,
            peer=dolma_prose,
            unit_of_work=prose_mb,
            unit="MB",
        ),
    ]
    inputs = {
        "corpus": composition,
        "layout": "DIR/documents/{prose,code}-NNNNN.jsonl.gz, read by every tool; the prose "
        "part is the prose-* files alone",
        "datatrove_sample": {
            "files": sorted(path.name for path in sample_files),
            "megabytes": round(sample_mb, 2),
        },
        "core_call_megabytes": round(core_mb, 2),
        "probe": {"what": "the standard library's email package, every .py file", **probe_info},
        "taggers": {
            "ours": OUR_TAGGERS,
            "dolma": DOLMA_TAGGERS,
            "note": "ours gopher computes Dolma's statistics and the Gopher paper's (more "
            "columns); c4 and pii as Dolma's c4_v1 and pii_regex_v1 (spans and counts)",
        },
        "processes": args.processes,
        "repeats": {"fast": args.repeats, "slow": args.slow_repeats},
        "warm_up": "one untimed run of each of ours and of the core calls; none for the Dolma "
        "and datatrove whole commands (they take tens of seconds; the corpus is already in the "
        "page cache from our warm-up)",
        "what_each_computes": {
            "ours": "olmo data tag --taggers gopher,c4,pii: every document read, parsed, "
            "tagged by all three taggers, attributes written as Parquet",
            "dolma": "dolma tag --taggers gopher_v1 c4_v1 pii_regex_v1: every document tagged "
            "by all three taggers, attributes written as jsonl.gz",
            "datatrove": "GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter "
            "(filters: a dropped document skips the later steps), PIIFormatter (replaces "
            "emails and IPs in the kept documents), JsonlWriter of the kept documents; "
            "its English word tokenizer is spaCy's",
            "core_call": "ours: the three taggers' tag() on a Polars frame of the documents; "
            "Dolma: each tagger's predict() on each Document, timed inside the script "
            "(loading excluded on both sides)",
        },
    }
    write_results(
        "curation_throughput",
        rows=rows,
        inputs=inputs,
        versions={
            "ours": versions(sys.executable, ["polars", "pyarrow", "numpy"]),
            "bench": versions(bench_python, ["datatrove", "spacy"]),
            "dolma": versions(dolma_python, ["dolma"]),
        },
        extra={"stages": stages, "stages_corpus_megabytes": prose_mb},
    )


if __name__ == "__main__":
    main()
