"""Personal information (email addresses, phone numbers, IPv4 addresses) found by regex.

This is Dolma's regex PII tagger (``pii_regex_with_counts_fast_v2``). Its expressions, as
Dolma states them (Python ``re`` syntax), are::

    EMAIL  [.\\s@,?!;:)(]*([^\\s@]+@[^\\s@,?!;:)(]+?)[.\\s@,?!;:)(]?[\\s\\n\\r]
    PHONE  \\s+\\(?(\\d{3})\\)?[-\\. ]*(\\d{3})[-. ]?(\\d{4})
    IP     (?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)

and an email is kept only if its part before ``@`` is not ``"("`` and its domain contains a
``"."``. We report the same addresses, with these differences:

* **Spans are the address itself**, Python character offsets, end exclusive. Dolma's spans
  include the whitespace and punctuation its expressions consume around the address (which
  is presumably why its replacement tokens carry spaces: :data:`PII_REPLACEMENTS`, which the
  mixes put in place of each span, as ``span_replacements``).
* **Email**: the leading ``[.\\s@,?!;:)(]*`` is replaced by an equivalent that runs in linear
  time (Dolma's is quadratic on long runs of spaces or ``?``; Dolma skips documents with more
  than 10,000 question marks, we skip none): the match starts after whitespace,
  ``@`` or the start of the text, and leading ``.,?!;:)(`` are then trimmed off the address as
  Dolma's greedy prefix trims them. An address also ends at the end of the text (Dolma needs
  a whitespace after it), and a domain made only of dots is not an address. A seeded fuzz
  test checks that we find exactly Dolma's addresses otherwise.
* **Phone**: the leading ``\\s+`` becomes "after whitespace or at the start of the text";
  digits are ASCII ``[0-9]``.
* **IPv4**: octets are validated (at most 255) as in Dolma's expression, and the address must
  stand alone: not preceded by a word character or ``.``, not followed by a word character or
  by ``.`` and a word character (Dolma finds ``99.1.1.1`` inside ``999.1.1.1`` and
  ``1.2.3.4`` inside the version ``1.2.3.4.5``; we find neither). Dolma's extra check that an
  IP match contains no URL can never fire on an IP, so it is not repeated.

The work is vectorized where the text is: Polars splits the batch into lines (no pattern
crosses a newline) and keeps the few lines a Rust-regex superset of each pattern matches;
Python's ``re`` then runs only on those lines, so offsets are character offsets for free.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import numpy as np
import polars as pl

from olmo_assets.curation.taggers.base import Tagger, attribute, spans_column

__all__ = [
    "EMAIL_PATTERN",
    "IP_PATTERN",
    "PHONE_PATTERN",
    "PII_KINDS",
    "PII_REPLACEMENTS",
    "PiiTagger",
    "matching_lines",
]

#: The kinds of PII, in column order (``pii__email_spans``, ``pii__phone_spans``, ...).
PII_KINDS = ("email", "phone", "ip")
#: Dolma's replacement for each kind (the spaces are part of it).
PII_REPLACEMENTS = {
    "email": " |||EMAIL_ADDRESS||| ",
    "phone": " |||PHONE_NUMBER||| ",
    "ip": " |||IP_ADDRESS||| ",
}

#: Group 1 is the address (before leading punctuation is trimmed, see the module docstring).
EMAIL_PATTERN = r"(?<![^\s@])([^\s@]+@[^\s@,?!;:)(]+?)[.\s@,?!;:)(]?(?:\s|\Z)"
#: Group 1 is the number, parentheses and separators included.
PHONE_PATTERN = r"(?<!\S)(\(?[0-9]{3}\)?[-. ]*[0-9]{3}[-. ]?[0-9]{4})"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
#: Group 1 is the address.
IP_PATTERN = rf"(?<![\w.])((?:{_OCTET}\.){{3}}{_OCTET})(?!\w|\.\w)"

# Rust-regex supersets of each pattern (no look-around there): a line they do not match
# cannot hold a match, so Python never sees it.
_LINE_FILTERS = {
    "email": r"[^\s@]@[^\s@,?!;:)(]*\.",
    "phone": r"[0-9]{3}\)?[-. ]*[0-9]{3}[-. ]?[0-9]{4}",
    "ip": r"[0-9]\.[0-9]+\.[0-9]+\.[0-9]",
}
_EMAIL_PUNCTUATION = ".,?!;:)("
_EMAIL = re.compile(EMAIL_PATTERN)
_PHONE = re.compile(PHONE_PATTERN)
_IP = re.compile(IP_PATTERN)

Span = tuple[int, int]


def _find_emails(line: str) -> list[Span]:
    spans = []
    for match in _EMAIL.finditer(line):
        start, end = match.span(1)
        addressee, domain = match.group(1).split("@", 1)
        # Dolma's greedy prefix eats leading punctuation, leaving at least one character.
        trimmed = addressee.lstrip(_EMAIL_PUNCTUATION)
        start += len(addressee) - max(len(trimmed), 1)
        addressee = addressee[-max(len(trimmed), 1) :]
        if addressee.strip() == "(" or "." not in domain or not domain.strip("."):
            continue
        spans.append((start, end))
    return spans


def _find_group(pattern: re.Pattern[str], line: str) -> list[Span]:
    return [match.span(1) for match in pattern.finditer(line)]


_FINDERS = {
    "email": _find_emails,
    "phone": lambda line: _find_group(_PHONE, line),
    "ip": lambda line: _find_group(_IP, line),
}


class PiiTagger(Tagger):
    """Email, phone and IPv4 spans and counts (``pii__*``).

    Columns: ``email_spans``, ``phone_spans``, ``ip_spans`` (SPAN: the address itself, in
    characters), ``email_count``, ``phone_count``, ``ip_count`` and ``total_count``.
    """

    name = "pii"

    def tag(self, docs: pl.DataFrame) -> pl.DataFrame:
        found: dict[str, list[tuple[int, int, int]]] = {kind: [] for kind in PII_KINDS}
        for kind, row, offset, line in matching_lines(docs["text"], _LINE_FILTERS):
            found[kind].extend((row, offset + s, offset + e) for s, e in _FINDERS[kind](line))
        spans = {}
        for kind in PII_KINDS:
            # Built from flat arrays: a Series of Python lists of dicts is slow to construct.
            flat = np.array(sorted(found[kind]), dtype=np.int64).reshape(-1, 3)
            spans[kind] = spans_column(kind, flat[:, 0], flat[:, 1], flat[:, 2], docs.height)
        counts = {kind: column.list.len().cast(pl.Int64) for kind, column in spans.items()}
        columns = {attribute(self.name, f"{kind}_spans"): c for kind, c in spans.items()}
        columns |= {attribute(self.name, f"{kind}_count"): c for kind, c in counts.items()}
        columns[attribute(self.name, "total_count")] = (
            counts["email"] + counts["phone"] + counts["ip"]
        )
        return docs.select("id").with_columns(**columns)


def matching_lines(
    texts: pl.Series, patterns: Mapping[str, str]
) -> Iterator[tuple[str, int, int, str]]:
    """``(key, row, offset, line)`` for each line of ``texts`` that ``patterns[key]`` matches.

    Lines are the pieces of ``text.split("\\n")``; ``row`` is the text's index in ``texts``
    and ``offset`` the line's start in characters. The patterns are Rust regexes (Polars),
    so this narrows a batch to the few lines worth a Python ``re`` pass, vectorized.
    """
    text = texts.fill_null("")
    lines = (
        pl.DataFrame({"row": pl.int_range(len(text), eager=True), "text": text})
        .filter(pl.any_horizontal(pl.col("text").str.contains(p) for p in patterns.values()))
        .select("row", pl.col("text").str.split("\n").alias("line"))
        .explode("line")
        .with_columns(length=pl.col("line").str.len_chars().cast(pl.Int64) + 1)
        .with_columns(offset=pl.col("length").cum_sum().over("row") - pl.col("length"))
    )
    for key, pattern in patterns.items():
        matching = lines.filter(pl.col("line").str.contains(pattern))
        for row, offset, line in zip(
            matching["row"].to_list(),
            matching["offset"].to_list(),
            matching["line"].to_list(),
            strict=True,
        ):
            yield key, row, offset, line
