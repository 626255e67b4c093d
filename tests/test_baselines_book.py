"""The appendix's baselines before and after their fitted settings, and the reason of each baseline
below chance (read from the recorded CIFAR-10 study and a regime table made up here)."""

import pandas as pd
import pytest

from ood_lib import OODInputError
from ood_lib.book.baselines import below_chance, regime_grid
from ood_lib.findings.study import Study
from conftest import REPO


def _regime(after: float, rule: str = "chosen 20 (99.00 %)") -> pd.DataFrame:
    rows = [{"method": "ash", "level": "group", "group": g, "setting_before": "percentile 95",
             "setting_after": "percentile 20", "auroc_before": 36.2 if g == "near" else 70.0,
             "auroc_after": after, "rule": rule} for g in ("near", "far-natural", "far-synthetic")]
    rows.append({"method": "odin", "level": "group", "group": "near", "setting_before": float("nan"),
                 "setting_after": "T 1000 · ε 0.0014", "auroc_before": float("nan"), "auroc_after": 90.0, "rule": ""})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cifar10():
    return {"cifar10": Study.load(REPO / "results" / "recorded" / "cifar10")}


def test_regime_grid_shows_before_and_after_per_cell():
    g = regime_grid({"cifar10": _regime(83.3)})
    assert g.loc[("CIFAR-10 · ResNet-20", "ASH"), "near"] == "36.2 → 83.3"
    assert g.loc[("CIFAR-10 · ResNet-20", "ASH"), "setting"] == "percentile 95 → 20"
    assert g.loc[("CIFAR-10 · ResNet-20", "ODIN"), "near"] == "90.0"
    with pytest.raises(OODInputError, match="lacks columns"):
        regime_grid({"cifar10": _regime(83.3).drop(columns="auroc_after")})


def test_every_baseline_below_chance_gets_its_reason(cifar10):
    low = below_chance(cifar10, {"cifar10": _regime(83.3)})
    assert len(low) >= 1 and (low.AUROC < 50).all()
    ash = low[(low.baseline == "ASH") & (low.cell == "near")].iloc[0]
    assert ash["fitted setting"] == 83.3 and ash.why.startswith("outside its regime at percentile 95")
    still = below_chance(cifar10, {"cifar10": _regime(45.0, "none reaches it: the highest agreement, 20 (93.50 %)")})
    assert "93.50 % of the ID training predictions" in still[still.baseline == "ASH"].why.iloc[0]
    with pytest.raises(OODInputError, match="no reason"):  # below chance, no fitted row, no stated reason
        below_chance(cifar10, {})
    import dataclasses

    live = {"cifar10": dataclasses.replace(cifar10["cifar10"], source="live")}  # a live run on other images
    assert below_chance(live, {}).why.str.contains("record its regime table").any()
