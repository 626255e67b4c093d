"""How large the penultimate feature is, and what clips it: measurements behind the ImageNet evidence.

* :func:`feature_norm_spread` — the spread of ‖h‖₁ per set (a ViT's LayerNorm-ed class token has
  an almost constant size, so ‖h‖₁ can hardly separate anything: the pre-registered mechanism's
  pointed case, page *Pre-registration*);
* :func:`relu6_clipping` — EfficientNet-Lite's last ReLU6 before the pooling clips the features at
  6 (a built-in ReAct): ‖h‖₁ before and after that clip, and the share of clipped activations;
* :func:`measure_sets` — both on a few images of every set of a benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._checks import OODInputError

__all__ = ["feature_norm_spread", "measure_sets", "relu6_clipping"]


def feature_norm_spread(norms: Mapping[str, Any]) -> pd.DataFrame:
    """One row per set of ``norms`` (set → ‖h‖₁ per image): n, mean, sd (ddof 1), cv = sd / mean,
    min, median, max."""
    rows = []
    for key, a in norms.items():
        a = np.asarray(a, dtype=np.float64).ravel()
        if a.size == 0 or not np.isfinite(a).all():
            raise OODInputError(f"set {key!r}: need finite ‖h‖₁ values, got {a.size} value(s)")
        sd = float(a.std(ddof=1)) if a.size > 1 else float("nan")
        rows.append({"set": key, "n": int(a.size), "mean": float(a.mean()), "sd": sd, "cv": sd / float(a.mean()),
                     "min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())})
    return pd.DataFrame(rows)


def _last_called(model: nn.Module, x: torch.Tensor, kind: type) -> nn.Module:
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, *_a: order.append(mod)) for m in model.modules() if isinstance(m, kind)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for hd in hooks:
            hd.remove()
    if not order:
        raise OODInputError(f"{type(model).__name__} calls no {kind.__name__} module")
    return order[-1]


def relu6_clipping(model: nn.Module, x: torch.Tensor, cap: float = 6.0) -> pd.DataFrame:
    """Per image, at the last ``nn.ReLU6`` the forward pass calls (EfficientNet-Lite: the one after
    the head convolution, before global average pooling): ``l1_before`` = ‖pool(a)‖₁ of the
    pre-activation a, ``l1_uncapped`` = ‖pool(max(a, 0))‖₁ (a ReLU without the cap), ``l1_after`` =
    ‖pool(ReLU6(a))‖₁ (= ‖h‖₁ when pooling gives h), and the share
    of activations (units × positions) the clip changes — ``frac_capped`` (a > cap) and
    ``frac_zeroed`` (a < 0) — and of pooled units whose pre-activation mean exceeds the cap
    (``frac_units_capped``)."""
    act = _last_called(model, x, nn.ReLU6)
    seen: dict[str, torch.Tensor] = {}
    pre = act.register_forward_pre_hook(lambda _m, inp: seen.__setitem__("a", inp[0].detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        pre.remove()
    a = seen["a"].double()
    dims = tuple(range(2, a.ndim))
    pooled = a.mean(dim=dims) if dims else a
    pool = (lambda t: t.mean(dim=dims)) if dims else (lambda t: t)  # noqa: E731
    after, uncapped = pool(a.clamp(0.0, cap)), pool(a.clamp_min(0.0))
    flat = a.flatten(1)
    return pd.DataFrame({
        "l1_before": pooled.abs().sum(1).numpy(), "l1_uncapped": uncapped.sum(1).numpy(), "l1_after": after.sum(1).numpy(),
        "frac_capped": (flat > cap).double().mean(1).numpy(), "frac_zeroed": (flat < 0).double().mean(1).numpy(),
        "frac_units_capped": (pooled > cap).double().mean(1).numpy(),
    })


def measure_sets(benchmark: str, data_root: str | Path, n: int = 64, seed: int = 0, clipping: bool = False,
                 checkpoint: str | None = None) -> pd.DataFrame:
    """On ``n`` seeded images of the ID test split and of every OOD set of ``benchmark``: the spread
    of ‖h‖₁ (:func:`feature_norm_spread`), and with ``clipping`` the means over the images of
    :func:`relu6_clipping`'s columns. One row per set."""
    from ..data import files as D
    from ..data.benchmarks import get_benchmark

    bench = get_benchmark(benchmark)
    root = Path(data_root)
    model = bench.load_model(root, seed=seed, checkpoint=checkpoint).eval()
    splits = {k: s for k, s in bench.splits(root, seed=seed).items() if k != "id_train"}
    norms, clip = {}, []
    for key, split in splits.items():
        x, _ = D.stack_images(split.dataset, n, seed)
        with torch.no_grad():
            norms[key] = model.features(x).abs().sum(1).double().numpy()
        if clipping:
            clip.append(relu6_clipping(model, x).mean().rename(key))
    out = feature_norm_spread(norms)
    if clipping:
        out = out.merge(pd.DataFrame(clip).rename_axis("set").reset_index(), on="set")
    return out.assign(benchmark=bench.name)
