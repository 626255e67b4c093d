"""ood_lib.book.glue refuses what the prose could only print as nan/inf, and passes the rest on."""

import math

import numpy as np
import pytest
import torch

from ood_lib import OODInputError
from ood_lib.book import check_glue_value, glue


@pytest.mark.parametrize("value", [float("nan"), math.inf, -math.inf, np.float32("nan"), np.array([1.0, np.nan]),
                                   torch.tensor(float("inf")), complex(1, float("nan")), None],
                         ids=["nan", "inf", "-inf", "np.float32 nan", "array with nan", "tensor inf",
                              "complex nan", "None"])
def test_non_finite_values_are_refused(value, monkeypatch):
    calls = []
    monkeypatch.setattr("myst_nb.glue", lambda *a, **k: calls.append(a))
    with pytest.raises(OODInputError, match="glue 'nb01_x'"):
        glue("nb01_x", value)
    assert calls == []


@pytest.mark.parametrize("value", [0, 1.5, np.float64(2.0), torch.tensor(3.0), np.arange(3), "nan as text", True,
                                   np.array(["a", "b"])])
def test_finite_values_reach_myst_nb(value, monkeypatch):
    calls = []
    monkeypatch.setattr("myst_nb.glue", lambda name, v, display: calls.append((name, v, display)))
    glue("nb01_x", value)
    assert len(calls) == 1 and calls[0][0] == "nb01_x" and calls[0][1] is value and calls[0][2] is False


def test_a_pandas_table_is_checked():
    import pandas as pd

    check_glue_value("t", pd.DataFrame({"a": [1.0, 2.0]}))
    with pytest.raises(OODInputError, match="non-finite"):
        check_glue_value("t", pd.DataFrame({"a": [1.0, np.nan]}))
