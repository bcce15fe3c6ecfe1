"""PII spans (email, phone, IPv4) on hand-counted texts, and Dolma parity, through the tagger."""

from __future__ import annotations

import random
import re

import polars as pl
import pytest

from olmo_assets.curation.taggers.base import SPAN
from olmo_assets.curation.taggers.pii import PII_KINDS, PiiTagger


def _docs(*texts: str | None) -> pl.DataFrame:
    return pl.DataFrame(
        {"id": [f"d{i}" for i in range(len(texts))], "text": list(texts), "source": "web"},
        schema={"id": pl.String, "text": pl.String, "source": pl.String},
    )


def _find_all(texts: list[str]) -> list[dict[str, list[tuple[int, int]]]]:
    """Each text's ``(start, end)`` spans per PII kind, as the tagger finds them."""
    out = PiiTagger().tag(_docs(*texts))
    return [
        {kind: [(s["start"], s["end"]) for s in row[f"pii__{kind}_spans"]] for kind in PII_KINDS}
        for row in out.iter_rows(named=True)
    ]


def _pii(text: str) -> dict[str, list[tuple[int, int]]]:
    return _find_all([text])[0]


def _spans(text: str, kind: str) -> list[str]:
    return [text[s:e] for s, e in _pii(text)[kind]]


def test_email_span_is_the_address() -> None:
    assert _pii("mail bob@example.com now")["email"] == [(5, 20)]
    # Leading punctuation and trailing punctuation are not part of the address.
    assert _spans("(bob@example.com) or <ann.lee@mail.example.org>.", "email") == [
        "bob@example.com",
        "<ann.lee@mail.example.org>",
    ]
    # An address at the very end of the text counts (Dolma needs a space after it).
    assert _spans("write to ann@uni.edu", "email") == ["ann@uni.edu"]


def test_email_needs_a_dotted_domain() -> None:
    assert _pii("@decorator and x @ y and user@localhost here")["email"] == []
    assert _pii("a@... is not an address")["email"] == []


def test_character_offsets_after_non_ascii_text() -> None:
    assert _pii("café bob@x.io")["email"] == [(5, 13)]
    docs = _docs("日本語のテキスト bob@x.io と 192.168.0.1")
    row = PiiTagger().tag(docs).row(0, named=True)
    assert row["pii__email_spans"] == [{"start": 9, "end": 17}]
    assert row["pii__ip_spans"] == [{"start": 20, "end": 31}]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("call 555-123-4567 today", "555-123-4567"),
        ("call (555) 123-4567 today", "(555) 123-4567"),
        ("call 555.123.4567 today", "555.123.4567"),
        ("call 5551234567 today", "5551234567"),
        ("555 123 4567 at the start", "555 123 4567"),
    ],
)
def test_phone_formats(text: str, number: str) -> None:
    assert _spans(text, "phone") == [number]


def test_phone_needs_whitespace_before_it() -> None:
    assert _pii("id:5551234567 and x5551234567")["phone"] == []


def test_ipv4_octets_are_validated_and_the_address_stands_alone() -> None:
    text = "hosts 10.0.0.1, 255.255.255.255 and 192.168.1.1."
    assert _spans(text, "ip") == ["10.0.0.1", "255.255.255.255", "192.168.1.1"]
    assert _pii("999.1.1.1 and 1.2.3.256 and 256.1.1.1")["ip"] == []
    assert _pii("version 1.2.3.4.5 or v1.2.3.4")["ip"] == []


def test_tagger_columns_rows_and_counts() -> None:
    docs = _docs(
        "mail bob@example.com now",
        "",
        None,
        "a@b.io c@d.io 10.0.0.1\ncall 555-123-4567",
    )
    out = PiiTagger().tag(docs)
    assert out.columns == [
        "id",
        "pii__email_spans",
        "pii__phone_spans",
        "pii__ip_spans",
        "pii__email_count",
        "pii__phone_count",
        "pii__ip_count",
        "pii__total_count",
    ]
    assert out["id"].to_list() == ["d0", "d1", "d2", "d3"]
    assert out.schema["pii__email_spans"] == SPAN
    assert out["pii__email_count"].to_list() == [1, 0, 0, 2]
    assert out["pii__phone_count"].to_list() == [0, 0, 0, 1]
    assert out["pii__ip_count"].to_list() == [0, 0, 0, 1]
    assert out["pii__total_count"].to_list() == [1, 0, 0, 4]
    assert out["pii__phone_spans"][3].to_list() == [{"start": 28, "end": 40}]
    assert PiiTagger().tag(_docs()).height == 0


# Dolma's expressions verbatim, and its email post-processing, as the reference.
_DOLMA_EMAIL = re.compile("[.\\s@,?!;:)(]*([^\\s@]+@[^\\s@,?!;:)(]+?)[.\\s@,?!;:)(]?[\\s\n\r]")
_DOLMA_PHONE = re.compile("\\s+\\(?(\\d{3})\\)?[-\\. ]*(\\d{3})[-. ]?(\\d{4})")


def _dolma_emails(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in _DOLMA_EMAIL.finditer(text + "\n"):  # Dolma needs a whitespace after
        addressee, domain = match.group(1).split("@", 1)
        if addressee.strip() == "(" or "." not in domain or not domain.strip("."):
            continue
        spans.append(match.span(1))
    return spans


def _dolma_phones(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in _DOLMA_PHONE.finditer(" " + text):  # Dolma needs a whitespace before
        number = match.group(0).lstrip()
        spans.append((match.end() - len(number) - 1, match.end() - 1))
    return spans


@pytest.mark.parametrize(
    ("alphabet", "kind"),
    [("ab.@ (),x\n:;?!<>", "email"), ("a@. ,(", "email"), ("1111111 -.()\na", "phone")],
)
def test_same_matches_as_dolma_on_random_text(alphabet: str, kind: str) -> None:
    reference = _dolma_emails if kind == "email" else _dolma_phones
    rng = random.Random(0)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(5000)]
    for text, found in zip(texts, _find_all(texts), strict=True):
        assert found[kind] == reference(text), repr(text)


def test_linear_time_on_long_runs() -> None:
    # Dolma's email expression is quadratic here (it skips documents with > 10k '?').
    texts = [" " * 200_000 + "a@b.io", "? " * 100_000 + "a@b.io", "x" * 200_000 + "@b.io"]
    out = PiiTagger().tag(_docs(*texts))
    assert out["pii__email_count"].to_list() == [1, 1, 1]
