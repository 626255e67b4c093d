"""The cost benchmark's per-layer rows and the ratios the chapter *Cost* quotes (no timed assertions)."""

import math

import pandas as pd
import pytest
import torch
from torch import nn

from ood_lib import OODInputError
from ood_lib.run.cost import (LAYER_CHUNK, LAYER_LOOP_PATHS, LAYER_PATHS, layer_ratios,
                          path_functions, score_cost)
from ood_lib.gradients.layers import layer_grad_norms
from ood_lib.models import FeatureModel


class _TinyNet(FeatureModel):
    """conv → BN → ReLU → global mean → Linear: every layer kind the hooks path rebuilds."""

    head_name = "fc"

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def features(self, x):
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


def _tiny():
    torch.manual_seed(0)
    return _TinyNet().eval(), torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _table(ms: dict[str, float], model: str = "m") -> pd.DataFrame:
    return pd.DataFrame({"model": model, "device": "cpu", "path": list(ms), "ms_per_image": list(ms.values())})


def test_per_layer_rows_with_the_batch1_loop_give_finite_ratios():
    model, x = _tiny()
    t = score_cost(model, x, label="tiny", repeats=1, loop_images=2,
                   paths=("forward",) + LAYER_PATHS + LAYER_LOOP_PATHS)
    assert list(t.path) == ["forward", *LAYER_PATHS, *LAYER_LOOP_PATHS]
    assert dict(zip(t.path, t.images_timed)) == {"forward": 5, "forward_backward": 5, "per_layer_all": 5,
                                                 "per_layer_hooks": 5, "per_layer_loop": 2}
    assert (t.ms_min <= t.ms_per_image).all() and (t.ms_per_image <= t.ms_max).all()
    r = layer_ratios(t)
    assert len(r) == 1 and r.model.iloc[0] == "tiny" and r.loop.iloc[0] == "per_layer_loop"
    cols = ["fb_over_forward", "hooks_over_fb", "all_over_fb", "loop_over_hooks", "loop_over_all"]
    cols += ["hooks_over_fb_lo", "hooks_over_fb_hi"]
    assert all(math.isfinite(v) and v > 0 for v in r[cols].iloc[0])
    assert r.hooks_over_fb_lo.iloc[0] <= r.hooks_over_fb.iloc[0] <= r.hooks_over_fb_hi.iloc[0]
    assert r.aim.iloc[0] in ("met", "missed", "unsettled")


def test_the_per_layer_loop_path_is_the_batch1_reference_on_the_first_images():
    model, x = _tiny()
    got = path_functions(model, x, loop_images=2)["per_layer_loop"]()
    want = layer_grad_norms(model, x[:2], method="loop")
    assert set(got["l1"]) == {n for n, _ in model.named_parameters()}
    for nm in want:
        for n in want[nm]:
            assert got[nm][n].shape == (2,)
            torch.testing.assert_close(got[nm][n], want[nm][n])


def test_unknown_path_is_named_in_the_error():
    model, x = _tiny()
    with pytest.raises(OODInputError, match="per_layer_looop.*known: .*per_layer_loop"):
        score_cost(model, x, label="tiny", repeats=1, paths=("forward", "per_layer_looop"))


def test_layer_ratios_on_known_times():
    ms = {"forward": 1.0, "forward_backward": 3.0, "per_layer_all": 6.0, "per_layer_hooks": 4.0,
          "per_layer_loop": 40.0, "gradnorm_published": 20.0}
    r = layer_ratios(_table(ms)).iloc[0]
    assert (r.fb_over_forward, r.all_over_fb, r.loop_over_hooks) == (3.0, 2.0, 10.0)
    assert r.hooks_over_fb == pytest.approx(4 / 3) and r.loop_over_all == pytest.approx(40 / 6)
    assert r.aim == "met" and math.isnan(r.hooks_over_fb_lo)  # no spread: the median decides
    assert layer_ratios(_table({**ms, "per_layer_hooks": 4.5})).aim.iloc[0] == "met"  # 1.5× exactly
    assert layer_ratios(_table({**ms, "per_layer_hooks": 4.6})).aim.iloc[0] == "missed"
    g = layer_ratios(_table(ms), loop="gradnorm_published").iloc[0]
    assert g.loop == "gradnorm_published" and g.loop_over_hooks == 5.0


@pytest.mark.parametrize("hooks_min,hooks_max,aim", [(3.9, 4.2, "met"), (4.2, 4.8, "unsettled"),
                                                     (4.7, 5.0, "missed")])
def test_layer_ratios_aim_follows_the_spread_over_repeats(hooks_min, hooks_max, aim):
    t = _table({"forward": 1.0, "forward_backward": 3.0, "per_layer_all": 6.0, "per_layer_hooks": 4.4,
                "per_layer_loop": 40.0})
    t["ms_min"], t["ms_max"] = t.ms_per_image * 0.95, t.ms_per_image * 1.05
    t.loc[t.path == "forward_backward", ["ms_min", "ms_max"]] = [2.95, 3.05]
    t.loc[t.path == "per_layer_hooks", ["ms_min", "ms_max"]] = [hooks_min, hooks_max]
    r = layer_ratios(t).iloc[0]
    assert r.hooks_over_fb_lo == pytest.approx(hooks_min / 3.05)
    assert r.hooks_over_fb_hi == pytest.approx(hooks_max / 2.95)
    assert r.aim == aim


def test_layer_ratios_skips_models_without_per_layer_rows():
    with_layers = _table({"forward": 1.0, "forward_backward": 2.0, "per_layer_all": 4.0,
                          "per_layer_hooks": 3.0, "per_layer_loop": 30.0}, model="a")
    without = _table({"forward": 1.0, "gradnorm_published": 9.0}, model="b")
    r = layer_ratios(pd.concat([without, with_layers]))
    assert list(r.model) == ["a"] and math.isnan(layer_ratios(with_layers.drop(index=0)).fb_over_forward.iloc[0])


@pytest.mark.parametrize("table,kw,match", [
    (_table({"forward": 1.0, "forward_backward": 2.0, "per_layer_all": 4.0, "per_layer_hooks": 3.0}), {},
     "lack path.*per_layer_loop"),
    (_table({"forward": 1.0, "gradnorm_published": 9.0}), {}, "no model .* per-layer"),
    (_table({"forward": 1.0}).drop(columns="ms_per_image"), {}, "lacks column.*ms_per_image"),
    (_table({"forward": 1.0}), {"loop": "loop_head_only"}, "loop must be"),
])
def test_layer_ratios_bad_input(table, kw, match):
    with pytest.raises(OODInputError, match=match):
        layer_ratios(table, **kw)


def test_per_layer_paths_batch_in_chunks_of_layer_chunk(monkeypatch):
    seen = []
    import ood_lib.run.cost as cost

    def spy(model, x, method="vmap", chunk_size=None):
        seen.append((method, chunk_size))
        return {}
    monkeypatch.setattr(cost, "layer_grad_norms", spy)
    model, x = _tiny()
    fns = path_functions(model, x)
    fns["per_layer_all"](), fns["per_layer_hooks"]()
    assert [c for _, c in seen] == [LAYER_CHUNK, LAYER_CHUNK] and seen[1][0] == "hooks"
