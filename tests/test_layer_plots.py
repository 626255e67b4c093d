"""The rank-one figure marks the classifier head on its tick."""

import pytest

from ood_lib import OODInputError
from ood_lib.book.layer_plots import rank_one_figure


def test_rank_one_figure_marks_the_head():
    res = {"conv.weight": [0.5, 0.6], "fc.weight": [1e-16, 2e-16]}
    fig = rank_one_figure(res, {"fc.weight": "one product"}, head="fc.weight")
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["conv", "fc (head)"]
    assert "head" not in fig.axes[0].get_xlabel()
    with pytest.raises(OODInputError, match="head 'out.weight'"):
        rank_one_figure(res, {}, head="out.weight")
