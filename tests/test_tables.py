"""tables.captioned: every table of the book carries a caption and one number style."""

import numpy as np
import pandas as pd
import pytest

from ood_lib import OODInputError
from ood_lib.book.tables import captioned


def test_caption_format_and_alignment():
    html = captioned(pd.DataFrame({"AUROC": [93.456, None]}, index=["a", "b"]), "Mean AUROC", "{:.1f}").to_html()
    assert "<caption>Mean AUROC</caption>" in html
    assert ">93.5<" in html and "—" in html and "93.456" not in html
    assert "text-align: right" in html


def test_text_tables_stay_left_aligned_and_styles_survive():
    t = pd.DataFrame({"verdict": ["supported", ""]})
    html = captioned(t, "Verdicts").to_html()
    assert "<caption>Verdicts</caption>" in html and "text-align: right" not in html
    styled = t.style.apply(lambda c: ["font-weight: bold", ""], axis=0)
    assert "font-weight: bold" in captioned(styled, "Bold kept").to_html()


def test_anything_else_is_refused():
    with pytest.raises(OODInputError, match="DataFrame or a Styler"):
        captioned([1, 2], "no")


def test_floats_keep_the_decimals_they_were_rounded_to():
    t = pd.DataFrame({"auroc": [94.0, 85.8], "ratio": [0.64, 1.2], "n": [3, 4], "x": [1 / 3, 0.5]})
    html = captioned(t, "mixed").to_html()
    assert ">94.0<" in html and ">85.8<" in html and "94.000000" not in html
    assert ">0.64<" in html and ">1.20<" in html and ">3<" in html and ">0.333<" in html


def _bold_cells(styler):
    styler._compute()
    return sorted(k for k, v in styler.ctx.items() if ("font-weight", "bold") in v)


def test_best_values_are_bold_as_the_page_shows_them():
    df = pd.DataFrame({"a": [1.04, 1.01, np.nan], "b": [3.0, 2.0, 2.96]}, index=["r1", "r2", "r3"])
    # by column, compared at one decimal: 1.04 and 1.01 tie, as do 3.0 and 2.96
    assert _bold_cells(captioned(df, "c", "{:.1f}", best="max")) == [(0, 0), (0, 1), (1, 0), (2, 1)]
    assert _bold_cells(captioned(df, "c", "{:.1f}", best="min", axis=1)) == [(0, 0), (1, 0), (2, 1)]
    df["text"] = ["x", "y", "z"]  # a text column is left alone
    assert _bold_cells(captioned(df, "c", best="min")) == [(1, 0), (1, 1)]
    with pytest.raises(OODInputError, match="best must be"):
        captioned(df, "c", best="largest")
