"""The one verdict language of the book, for both papers.

Every claim of paper A and paper B gets a sentence that starts with exactly one of :data:`WORDS`:

- "Holds": the evidence (an interval over seeds, or an exact check) lies on the paper's side of its value.
- "Partly holds": the effect has the paper's sign beyond the noise, but not the paper's size (or holds for
  only part of the claim).
- "Does not hold at this scale": the interval excludes the paper's claim at the scale the profile ran.
- "Inconclusive": the interval straddles the no-effect value: the noise is larger than the effect.
- "Not tested by this experiment": the runs that could speak to the claim are missing, or the experiment
  measures something else; the sentence says why ("Not tested by this experiment, because ...").

:func:`judge_interval` turns a confidence interval of an effect into a word, so that no verdict is a
threshold on one number.  The book explains the words once, on the front page.
"""

from __future__ import annotations

import math

__all__ = ["HOLDS", "PARTLY", "DOES_NOT_HOLD", "INCONCLUSIVE", "NOT_TESTED", "WORDS", "verdict_word",
           "judge_interval", "not_tested", "sentence"]

HOLDS = "Holds"
PARTLY = "Partly holds"
DOES_NOT_HOLD = "Does not hold at this scale"
INCONCLUSIVE = "Inconclusive"
NOT_TESTED = "Not tested by this experiment"
WORDS = (HOLDS, PARTLY, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTED)


def verdict_word(text: str) -> str | None:
    """The verdict word a sentence starts with (longest match first), or None when it starts with none."""
    s = (text or "").strip()
    for w in sorted(WORDS, key=len, reverse=True):
        if s.startswith(w):
            return w
    return None


def judge_interval(lo: float, hi: float, *, null: float, target: float | None = None,
                   larger_is_better: bool = True) -> str:
    """The verdict word for a claim "the effect reaches ``target``" from a confidence interval ``[lo, hi]``.

    ``null`` is the no-effect value (1 for a ratio, 0 for a difference); ``target`` the paper's value
    (None: the claim is only about the sign).  With ``larger_is_better=False`` the claim is that the effect
    lies *below* ``null`` (e.g. a score difference KL - baseline where lower scores are better).

    - interval entirely beyond ``target`` (or beyond ``null`` when there is no target): Holds;
    - entirely beyond ``null`` but not beyond ``target``: Partly holds;
    - entirely on the wrong side of ``null`` (or touching it from there): Does not hold at this scale;
    - straddling ``null``: Inconclusive.
    A NaN bound gives Not tested (there was nothing to judge).
    """
    if any(not isinstance(v, (int, float)) or math.isnan(v) for v in (lo, hi)):
        return NOT_TESTED
    if lo > hi:
        raise ValueError(f"interval bounds out of order: [{lo}, {hi}]")
    if not larger_is_better:  # mirror, so that "better" is always "larger"
        lo, hi, null = -hi, -lo, -null
        target = None if target is None else -target
    if target is not None and lo >= target:
        return HOLDS
    if lo > null:
        return HOLDS if target is None else PARTLY
    if hi <= null:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def not_tested(because: str) -> str:
    """ "Not tested by this experiment, because <because>." """
    return f"{NOT_TESTED}, because {because.rstrip('.')}."


def sentence(word: str, detail: str) -> str:
    """``"<word> (<qualifier>): <detail>"`` is written by callers; this joins a word and its detail with a colon."""
    if word not in WORDS:
        raise ValueError(f"{word!r} is not a verdict word; use one of {WORDS}")
    return f"{word}: {detail}"
