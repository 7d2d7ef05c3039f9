"""One way to show a table in the book: padded cells, no index column, consistent significant digits.

Every chapter displays its tables through :func:`display_table`: it takes rows (a list of dicts), a
pandas ``DataFrame`` or a ``Styler`` and returns a ``Styler`` that

- hides the index column (row numbers mean nothing to a reader);
- prints every number with the same number of significant digits (:func:`sig`), integers as integers,
  missing values as a dash, lists of numbers as a bracketed list;
- pads every cell and lets long text wrap inside its cell (the book's stylesheet,
  ``book/_static/kl_repro.css``, makes a table wider than the page scroll inside its own box);
- carries a caption that says whose numbers these are ("paper", "ours", or both) when one is given;
- explains, in its caption, any column of an unbiased kernel estimator (KD_clf, KID), which can be
  negative (Methods E).
"""

from __future__ import annotations

import math
from numbers import Number

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

__all__ = ["sig", "display_table", "NEGATIVE_NOTE", "TABLE_CLASS"]

#: The CSS class of every table made here (styled by ``book/_static/kl_repro.css``).
TABLE_CLASS = "kl-table"

#: Said once under any table with a column of an unbiased kernel-distance estimate.
NEGATIVE_NOTE = ("KD_clf / KID are unbiased estimates of a squared kernel distance: when the two image sets are "
                 "closer than the sampling noise the estimate is negative (read it as zero within its spread; Methods E).")

_CELL_CSS = [
    {"selector": "", "props": "border-collapse: collapse; margin: 0.4em 0 1em 0; font-size: 0.88em;"},
    {"selector": "th, td", "props": "padding: 0.3em 0.75em; text-align: right; vertical-align: top; "
                                    "border-bottom: 1px solid #ddd; overflow-wrap: break-word; max-width: 28em;"},
    {"selector": "th", "props": "background: #f3f5f7; font-weight: 600;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; color: #333; padding: 0.2em 0;"},
]


def sig(value, digits: int = 3, na: str = "–") -> str:
    """``value`` as text with ``digits`` significant digits (``0.0127``, ``310``, ``1.9e-05``).

    Integers (and integral floats above ``10**digits``) are printed whole; None and NaN as ``na``;
    booleans as "yes"/"no"; lists, tuples and arrays element by element in brackets; anything else by ``str``.
    """
    if value is None:
        return na
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(sig(v, digits, na) for v in np.asarray(value, dtype=object).ravel()) + "]"
    if isinstance(value, complex):
        return sig(value.real, digits, na) if value.imag == 0 else f"{value.real:.{digits}g}{value.imag:+.{digits}g}j"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, Number):
        x = float(value)
        if math.isnan(x):
            return na
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        if x != 0 and abs(x) >= 10 ** digits and x == round(x):
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(value)


def _frame(data) -> pd.DataFrame:
    if isinstance(data, Styler):
        return data.data
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict):
        return pd.DataFrame(data)
    return pd.DataFrame(list(data))


def _has_negative_estimator(df: pd.DataFrame) -> bool:
    labels = [str(x) for c in df.columns for x in (c if isinstance(c, tuple) else (c,))]
    return any(x.upper().startswith(("KD", "KID")) for x in labels)


def display_table(data, caption: str | None = None, digits: int = 3, na: str = "–", rename: dict | None = None,
                  columns: list | None = None, header=None):
    """The book's display of a table (see the module docstring); returns a pandas ``Styler``.

    ``caption`` should say whose numbers these are ("ours: profile cpu, 500 samples, seed 0" or
    "paper: Table 1"); ``rename`` maps column names to readable headers, ``columns`` keeps and orders a subset;
    ``header`` formats the (last level of the) column labels for display only, so that the data keep them
    (``header=lambda n: f"N = {n}"`` over integer columns).  Two-level column labels show as two header rows.
    """
    df = _frame(data).copy()
    if columns is not None:
        df = df[[c for c in columns if c in df.columns]]
    if rename:
        df = df.rename(columns=rename)
    named_index = not isinstance(df.index, pd.RangeIndex) or any(n is not None for n in df.index.names)
    df = df.reset_index(drop=not named_index)  # a meaningful index becomes the first column; row numbers go
    note = NEGATIVE_NOTE if _has_negative_estimator(df) else ""
    if caption and note and not caption.rstrip().endswith((".", ":", ")")):
        caption = caption.rstrip() + "."
    text = " ".join(t for t in (caption or "", note) if t)
    styler = (df.style.format(lambda v: sig(v, digits, na)).hide(axis="index")
              .set_table_attributes(f'class="{TABLE_CLASS}"').set_table_styles(_CELL_CSS))
    text_columns = [c for c in df.columns if df[c].dtype == object and not all(isinstance(v, Number) for v in df[c])]
    if text_columns:  # words read from the left, numbers from the right
        styler = styler.set_properties(subset=text_columns, **{"text-align": "left"})
    if header is not None:
        styler = styler.format_index(header, axis=1, level=df.columns.nlevels - 1)
    if text:
        styler = styler.set_caption(text)
    return styler
