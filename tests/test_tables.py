"""tables.captioned: every table of the book carries a caption and one number style."""

import numpy as np
import pandas as pd
import pytest

from ood_lib import OODInputError
from ood_lib.book.tables import Tables, captioned, column_parts


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


def test_a_wide_table_is_split_by_columns_keeping_each_data_set_together():
    cols = ["embedded · CNN", "MNIST · CNN", "CIFAR-10 · A", "CIFAR-10 · B", "ImageNet · a", "ImageNet · b",
            "ImageNet · c", "ImageNet · d", "ImageNet · e"]
    assert column_parts(cols, 4) == [cols[:4], cols[4:8], cols[8:]]
    assert column_parts(cols[:3], 4) == [cols[:3]]
    with pytest.raises(OODInputError, match="at least one column"):
        column_parts(cols, 0)
    df = pd.DataFrame(np.arange(18.0).reshape(2, 9), columns=cols, index=["x", "y"])
    parts = captioned(df, "AUROC", "{:.1f}", best="max", columns=4)
    assert isinstance(parts, Tables) and len(parts) == 3
    html = [p.to_html() for p in parts]
    assert ["(1 of 3)" in html[0], "(3 of 3)" in html[2]] == [True, True]
    assert "ImageNet · e" in html[2] and "ImageNet · e" not in html[0] and "17.0" in html[2]
    assert len({p.uuid for p in parts}) == 3  # one id per table on the page
    assert parts._repr_html_().count("<table") == 3
    assert not isinstance(captioned(df[cols[:4]], "AUROC", columns=4), Tables)  # fits: one table
