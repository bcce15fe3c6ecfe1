"""Mixer decisions, span replacement, sampling and validation splits on literal cases."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from olmo_assets.curation.config import RuleConfig, SpanReplacementConfig
from olmo_assets.curation.mixer import apply_spans, decide, sample_copies, validation_mask


def test_first_stage_wins_and_nulls_never_fire() -> None:
    attributes = pl.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "language__en_score": [0.9, 0.1, 0.2, None],
            "gopher__word_count": [100, 100, 10, 10],
        }
    )
    rules = [
        RuleConfig(name="too_short", stage="quality", remove_if="gopher__word_count < 50"),
        RuleConfig(name="not_english", stage="language", remove_if="language__en_score < 0.5"),
    ]
    decisions = decide(attributes, rules)
    # b: language only; c: both -> charged to language (earlier stage); d: null score never fires.
    assert decisions.stage == [None, "language", "language", "quality"]
    assert decisions.reason == [None, "not_english", "not_english", "too_short"]


def test_a_bad_rule_is_named() -> None:
    attributes = pl.DataFrame({"id": ["a"], "gopher__word_count": [3]})
    with pytest.raises(ValueError, match="typo: no_such_column > 1"):
        decide(attributes, [RuleConfig(name="typo", remove_if="no_such_column > 1")])


def test_span_replacement() -> None:
    text = "keep this. drop me\nmail bob@x.io now"
    drop = SpanReplacementConfig(attribute="c4__drop_spans", replacement="")
    mask = SpanReplacementConfig(
        attribute="pii__email_spans", replacement=" |||EMAIL_ADDRESS||| ", max_spans=5
    )
    spans = [([{"start": 11, "end": 18}], drop), ([{"start": 24, "end": 32}], mask)]
    assert apply_spans(text, spans) == "keep this. \nmail  |||EMAIL_ADDRESS|||  now"
    # Overlapping: the later-starting span inside an applied one is skipped.
    overlapping = [([{"start": 0, "end": 10}, {"start": 5, "end": 12}], drop)]
    assert apply_spans(text, overlapping) == text[10:]
    # More spans than max_spans: that replacement is not applied (a rule removes such docs).
    many = [([{"start": i, "end": i + 1} for i in range(6)], mask)]
    assert apply_spans(text, many) == text


def test_sampling_and_validation_are_deterministic() -> None:
    ids = [f"doc-{i}" for i in range(4000)]
    half = sample_copies(ids, source="web", rate=0.5, seed=7)
    assert half.tolist() == sample_copies(ids, source="web", rate=0.5, seed=7).tolist()
    assert set(half.tolist()) == {0, 1}
    assert abs(half.mean() - 0.5) < 0.03
    assert sample_copies(ids, source="web", rate=2.0, seed=7).tolist() == [2] * 4000
    one_and_half = sample_copies(ids, source="web", rate=1.5, seed=7)
    assert set(one_and_half.tolist()) == {1, 2}
    held_out = validation_mask(ids, source="web", fraction=0.1, seed=7)
    assert abs(held_out.mean() - 0.1) < 0.02
    assert not np.array_equal(held_out, validation_mask(ids, source="web", fraction=0.1, seed=8))
