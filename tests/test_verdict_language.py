"""The one verdict language (kl_repro.core.verdict): interval -> word, with planted answers."""

import math

import pytest

from kl_repro.core import verdict as V


@pytest.mark.parametrize("lo, hi, word", [
    (2.1, 3.0, V.HOLDS),          # entirely beyond the paper's 2x
    (1.2, 2.5, V.PARTLY),         # faster beyond noise, 2x not established
    (0.8, 1.4, V.INCONCLUSIVE),   # straddles "no speed-up"
    (0.5, 0.9, V.DOES_NOT_HOLD),  # slower beyond noise
    (0.5, 1.0, V.DOES_NOT_HOLD),
])
def test_ratio_against_target(lo, hi, word):
    assert V.judge_interval(lo, hi, null=1.0, target=2.0) == word


def test_lower_is_better_difference():
    # KL - baseline final score; the claim is "KL ends lower" (difference below 0).
    assert V.judge_interval(-0.3, -0.1, null=0.0, larger_is_better=False) == V.HOLDS
    assert V.judge_interval(-0.1, 0.2, null=0.0, larger_is_better=False) == V.INCONCLUSIVE
    assert V.judge_interval(0.05, 0.2, null=0.0, larger_is_better=False) == V.DOES_NOT_HOLD


def test_nan_and_order():
    assert V.judge_interval(math.nan, 1.0, null=1.0) == V.NOT_TESTED
    with pytest.raises(ValueError):
        V.judge_interval(2.0, 1.0, null=1.0)


def test_words_and_sentences():
    assert V.verdict_word("Partly holds (digits): x") == V.PARTLY
    assert V.verdict_word("Holds at this scale") == V.HOLDS
    assert V.verdict_word("Does not hold at this scale (toy2d)") == V.DOES_NOT_HOLD
    assert V.verdict_word("maybe") is None
    assert V.not_tested("the runs are missing.") == "Not tested by this experiment, because the runs are missing."
    with pytest.raises(ValueError):
        V.sentence("Probably", "x")
