"""Hold every autograd gradient score against its closed form on a real model and batch.

Chapter *Gradient scores and their closed forms* shows this table; ``python -m ood_lib verify``
prints it. :func:`verify_layers` (``verify --layers all``) holds the batched per-sample gradient
norms of every parameter tensor against the batch-1 autograd loop, and the closed forms below the
head against both.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._checks import OODInputError, as_float_tensor
from ..scores.registry import GRADIENT_FORMS, GRADIENT_SCORES
from ..models.anatomy import default_deeper, has_attention, last_bn_name
from .autograd import _HeadOnly, gradient_score, target_spread
from .layers import NORMS, gap_conv_closed_form, layer_grad_norms, linear_closed_form
from ..scores.closed_forms import closed_form, u_term


C_PASS_MAX_CLASSES = 100  # above: the C-pass scores are checked on C_PASS_SUBSET images (the study's own limit)
C_PASS_SUBSET = 1
ATTENTION_SUBSET = 2  # images the rows below the head of an attention network are computed on (by the loop)


def gaia_last_module(model: nn.Module, x: Any) -> str:
    """The module whose output gradients GAIA's last-layer closed form describes
    (:func:`ood_lib.gradients.gaia.gaia_last_closed_form`): the last BatchNorm2d called in a forward pass, or
    in a network without one the last block before the head (:func:`default_deeper`; the MNIST
    CNN's ``fc1``, whose ReLU is h)."""
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return last_bn_name(model, x)
    return default_deeper(model)


def _max_rel(a: torch.Tensor, c: torch.Tensor, denom: torch.Tensor) -> float:
    d = denom.abs()
    return float(((a - c).abs() / d.clamp_min(torch.finfo(d.dtype).tiny)).max())


def _factor_scale(name: str, h: torch.Tensor, f: torch.Tensor, T: float, bias: bool) -> torch.Tensor:
    """c·U(h) for the score ``name`` (its closed form is c·U·V): the scale of one unit of V."""
    g = GRADIENT_FORMS[name]
    u = u_term(g.u, h, bias=bias)
    return g.factor(f.shape[1], T) * u


def verify(
    model: nn.Module,
    x: Any,
    *,
    temperature: float = 1.0,
    deeper: list[str] | None = None,
    loop: bool = True,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
    attention_subset: int = ATTENTION_SUBSET,
    c_pass_subset: int = C_PASS_SUBSET,
) -> pd.DataFrame:
    """Each gradient score by autograd against its closed form, on ``model`` and images ``x``.

    Columns, for the batched (``vmap``) and the one-image-at-a-time (``loop``) autograd paths:

    * ``rel_diff_*`` — max over images of |autograd − closed form| / |closed form|;
    * ``v_diff_*`` — max over images of |autograd − closed form| / (c·U(h)), the difference in
      units of the V term (which lies in [0, 2]). On a confident prediction (1 − max p ≈ 1e-11)
      autograd itself forms p_y − 1 and carries a rounding error of order eps / (1 − max p)
      relative to the result; ``v_diff`` is free of that conditioning and is the number held
      against the tolerance.

    Rows ``wrt = "W"`` and ``"W,b"`` are the last layer, where the identities are exact. The rows
    for the layers in ``deeper`` (default: :func:`default_deeper`) and for the input hold GradNorm's
    gradient norm there against the best constant multiple of the *head's* closed form: a large
    difference says only that it is not a multiple of ‖h‖₁‖p − u‖₁, not that it has no closed form
    of its own (every nn.Linear layer has one, see :func:`verify_layers`). ``spread`` is
    :func:`ood_lib.gradients.target_spread`: 0 where the gradient norm factorises through p − q.

    The last-layer gradient depends on the image only through h, so the rows ``W`` and ``W,b``
    differentiate the head alone, on the float64 features of one forward pass (both paths). Below
    the head, a network with attention (:func:`~ood_lib.models.anatomy.has_attention`) is not
    batched: ``torch.func.vmap`` has no batching rule for ``scaled_dot_product_attention`` and falls
    back to a per-sample slow path through the whole network. Its rows are computed by the loop on
    the first ``attention_subset`` images only (the ``vmap`` columns and ``spread``, which needs C
    backward passes per image through the network, are NaN); ``note`` says so on each such row.
    On a head of more than :data:`C_PASS_MAX_CLASSES` classes the scores that take C backward
    passes per image (the expectations over the labels; N·C²·D gradient entries by autograd) and
    ``spread`` are checked on the first ``c_pass_subset`` images (``note``).
    """
    model = copy.deepcopy(model).to(dtype).eval()
    x = as_float_tensor(x, "x").to(device=next(model.parameters()).device, dtype=dtype)
    with torch.no_grad():
        h, f = model.forward_features(x)
    paths = ["vmap", "loop"] if loop else ["vmap"]
    from tqdm.auto import tqdm

    bar = tqdm(total=2 * len(GRADIENT_SCORES) + 2, desc="verify", disable=not progress, leave=False)
    rows = _last_layer_rows(_HeadOnly(model.head).eval(), h, h, f, temperature, paths, bar, c_pass_subset)
    rows += _deeper_rows(model, x, h, f, temperature, paths, deeper, bar, attention_subset)
    bar.close()
    return pd.DataFrame(rows)


def _last_layer_rows(model, x, h, f, T: float, paths: list[str], bar, c_pass_subset: int = C_PASS_SUBSET) -> list[dict]:
    """:func:`verify`'s rows ``wrt = "W"`` and ``"W,b"``: every gradient score against its closed form
    (on a head of more than :data:`C_PASS_MAX_CLASSES` classes, the C-pass scores and ``spread`` on
    the first ``c_pass_subset`` images, as ``note`` says)."""
    rows: list[dict] = []
    N, C = f.shape
    k = N if C <= C_PASS_MAX_CLASSES else max(1, min(int(c_pass_subset), N))
    note = "" if k == N else f"C = {C} backward passes per image: on the first {k} of {N} images"
    for bias in (False, True):
        spread = float(target_spread(model, x[:k], wrt="head", temperature=T, bias=bias).max())
        for name, g in GRADIENT_SCORES.items():
            part = slice(0, k if g.passes_per_image == "C" else N)
            xs, hs, fs = x[part], h[part], f[part]
            # a score whose closed form is 0 is measured in the units of GradNorm's V term
            scale = _factor_scale(name if g.has_closed_form else "gradnorm", hs, fs, T, bias)
            c = closed_form(name, hs, fs, T, bias) if g.has_closed_form else torch.zeros_like(scale)
            row = {"score": name, "wrt": "W,b" if bias else "W", "closed_form": name if g.has_closed_form else g.formula}
            for method in paths:
                a = gradient_score(name, model, xs, temperature=T, bias=bias, method=method)
                row[f"rel_diff_{method}"] = _max_rel(a, c, c if g.has_closed_form else scale)
                row[f"v_diff_{method}"] = _max_rel(a, c, scale)
            row["spread"] = spread
            row["note"] = note if g.passes_per_image == "C" else ""
            rows.append(row)
            bar.update()
    return rows


def _deeper_rows(model, x, h, f, T: float, paths: list[str], deeper: list[str] | None, bar,
                 attention_subset: int = ATTENTION_SUBSET) -> list[dict]:
    """:func:`verify`'s rows below the head: GradNorm there against the best multiple of its head
    closed form (a network with attention: the loop on a stated subset of the images, see :func:`verify`)."""
    rows: list[dict] = []
    note = ""
    wanted = list(dict.fromkeys([*paths, *(["loop"] if has_attention(model) else [])]))
    if has_attention(model):
        k = max(1, min(int(attention_subset), len(x)))
        note = (f"attention (vmap has no batching rule for scaled_dot_product_attention): loop on the first {k} "
                f"of {len(x)} images; no spread")
        x, h, f, paths = x[:k], h[:k], f[:k], ["loop"]
    cf = closed_form("gradnorm", h, f, T)
    for wrt in (deeper if deeper is not None else [default_deeper(model)]) + ["input"]:
        row = {"score": "gradnorm", "wrt": wrt, "closed_form": "best multiple of gradnorm"}
        for method in wanted:
            if method not in paths:
                row[f"rel_diff_{method}"] = row[f"v_diff_{method}"] = float("nan")
                continue
            a = gradient_score("gradnorm", model, x, temperature=T, wrt=wrt, method=method).detach()
            k = float((a * cf).sum() / (cf * cf).sum())  # least-squares constant
            row[f"rel_diff_{method}"] = _max_rel(a, k * cf, a)
            row[f"v_diff_{method}"] = _max_rel(a, k * cf, k * _factor_scale("gradnorm", h, f, T, False))
        row["spread"] = float(target_spread(model, x, wrt=wrt, temperature=T).max()) if not note else float("nan")
        row["note"] = note
        rows.append(row)
        bar.update()
    return rows


def max_rel_diff(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max_i |a_i − ref_i| / |ref_i| over a batch (the smallest positive float stands in for a zero
    reference); 0 for an empty batch."""
    return _max_rel(a, ref, ref) if len(ref) else 0.0


def verify_layers(
    model: nn.Module,
    x: Any,
    *,
    layers: list[str] | None = None,
    loss: str = "uniform_kl",
    temperature: float = 1.0,
    dtype: torch.dtype = torch.float64,
    chunk_size: int = 16,
    progress: bool = False,
) -> pd.DataFrame:
    """Per parameter tensor: the batched per-sample gradient norms against the batch-1 loop.

    One row per tensor (all of them, or those under the prefixes in ``layers``): ``rel_diff_l1``
    and ``rel_diff_l2sq`` are the max over images of |batched − loop| / |loop| for ‖∇_θ ℓ‖₁ and
    ‖∇_θ ℓ‖₂² (see :func:`ood_lib.gradients.layers.layer_grad_norms`, ``method="vmap"``);
    ``rel_diff_hooks`` is the worst over both norms of ``method="hooks"`` (NaN where the model has
    a layer it does not rebuild). Where a closed form applies
    (every nn.Linear; the last convolution when global average pooling follows it) ``closed_form``
    names it and ``rel_diff_closed`` is its worst difference from the loop over both norms.
    ``df.attrs`` holds ``seconds_loop``, ``seconds_batched``, ``seconds_hooks``, ``seconds_closed`` and
    ``closed_forms_not_applied`` (closed form → why it does not apply to this model).
    """
    model = copy.deepcopy(model).to(dtype).eval()
    x = as_float_tensor(x, "x").to(device=next(model.parameters()).device, dtype=dtype)
    kw = dict(loss=loss, temperature=temperature)
    t0 = time.perf_counter()
    ref = layer_grad_norms(model, x, method="loop", params=layers, progress=progress, **kw)
    t1 = time.perf_counter()
    bat = layer_grad_norms(model, x, params=layers, chunk_size=chunk_size, progress=progress, **kw)
    t2 = time.perf_counter()
    try:
        hooked = layer_grad_norms(model, x, params=layers, method="hooks", chunk_size=chunk_size, **kw)
    except OODInputError:
        hooked = None  # a layer the hooks do not rebuild
    t_h = time.perf_counter()
    closed: dict[str, tuple[str, dict]] = {}
    not_applied: dict[str, str] = {}
    for form, fn in (("linear: ‖δ‖‖a‖", linear_closed_form), ("conv before pooling: Σ_c |g_c|‖ā_c‖", gap_conv_closed_form)):
        try:
            c = fn(model, x, **kw)
        except OODInputError as exc:  # no such layer, or its premise fails here: say which, in the table's attrs
            not_applied[form] = str(exc)
            continue
        closed.update({n: (form, c) for n in c["l1"]})
    t3 = time.perf_counter()
    params = dict(model.named_parameters())
    rows = []
    for n in ref["l1"]:
        row = {"parameter": n, "shape": "×".join(map(str, params[n].shape))}
        row.update({f"rel_diff_{k}": max_rel_diff(bat[k][n], ref[k][n]) for k in NORMS})
        row["rel_diff_hooks"] = max(max_rel_diff(hooked[k][n], ref[k][n]) for k in NORMS) if hooked else float("nan")
        form, c = closed.get(n, ("", None))
        row["closed_form"] = form
        row["rel_diff_closed"] = max(max_rel_diff(c[k][n], ref[k][n]) for k in NORMS) if c else float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs.update(seconds_loop=t1 - t0, seconds_batched=t2 - t1, seconds_hooks=t_h - t2, seconds_closed=t3 - t_h,
                    closed_forms_not_applied=not_applied)
    return df


def recorded_checks(folder: str | Path) -> pd.DataFrame:
    """The float64 checks a device run recorded in ``folder`` (``benchmarks/device_check.sh``), one row
    per ``verify_*.csv``: ``check`` — "last layer" (``verify --csv``: every gradient score against its
    closed form) or "every layer" (``verify --layers all --csv``: each parameter tensor's batched
    per-sample gradient norms against the batch-1 loop); ``name`` — the file's stem after the prefix
    (a benchmark or an architecture); ``rows`` — scores or parameter tensors checked; ``worst`` — the
    largest difference (V units for the last layer, relative for every layer). Empty when there is
    none; a file without the columns its check needs raises an :class:`OODInputError`."""
    rows = []
    for f in sorted(Path(folder).glob("verify_*.csv")):
        t = pd.read_csv(f)
        layers = f.stem.startswith("verify_layers_")
        cols = ([c for c in ("rel_diff_l1", "rel_diff_l2sq", "rel_diff_hooks", "rel_diff_closed") if c in t]
                if layers else [c for c in t if c.startswith("v_diff")])
        if not cols or (not layers and "wrt" not in t):
            raise OODInputError(f"{f}: not a table written by verify --csv (no difference columns)")
        part = t if layers else t[t.wrt.isin(["W", "W,b"])]
        rows.append({"check": "every layer" if layers else "last layer",
                     "name": f.stem.removeprefix("verify_layers_" if layers else "verify_"),
                     "rows": len(part), "worst": float(part[cols].max().max())})
    return pd.DataFrame(rows, columns=["check", "name", "rows", "worst"])


def recorded_layer_rows(folder: str | Path) -> pd.DataFrame:
    """Every row of the every-layer checks recorded in ``folder`` (``verify_layers_<name>.csv``,
    written by ``verify --layers all --csv``), with the ``name`` each came from; empty when there
    is none."""
    parts = [pd.read_csv(f).assign(name=f.stem.removeprefix("verify_layers_"))
             for f in sorted(Path(folder).glob("verify_layers_*.csv"))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["name", "parameter"])
