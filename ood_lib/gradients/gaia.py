"""GAIA (Chen, Li, Qu, Wang, Wan & Xiao, NeurIPS 2023, arXiv 2311.09620), and its last layer in closed form.

GAIA reads *attribution gradients*: gradients of an output w.r.t. intermediate feature maps. As
the authors' code computes them (github.com/JGEthanChen/GAIA-OOD, ``cal_method.py``), with the
gradient of each hooked map G_l (N, C_l, H_l, W_l) and "mean" over positions σ:

* GAIA-Z (zero-deflation): G_l = ∇ max_k f_k; ρ_{l,c} = mean_σ 1[G_{l,c,σ} ≠ 0];
  abnormality = mean over all hooked channels (l, c) of ρ_{l,c}², hooks on every BatchNorm2d.
* GAIA-A (channel-wise average): inner_{l,c} = |mean_σ ∂(Σ_j h_j)/∂z_{l,c,σ}|, the attribution of the
  pooled features h to the hooked maps z_l; out = (mean_c |mean_σ ∂(Σ_k log p_k)/∂A_{c,σ}|)^½ at the
  map A that global average pooling turns into h; abnormality = mean over (l, c) of (inner / out)².
  Hooks: the BatchNorm2d outputs of the last stages (their ResNets) or of all (their WRN).

Larger abnormality = OOD (the authors score −abnormality). Where a model has no BatchNorm2d, the
Conv2d outputs are hooked (their ``hook.py`` provides both).

The last layer in closed form (chapter *Gradient scores and their closed forms*, section on
depth). Let A = relu(Z) (D channels, S = H·W positions) be the map before global average pooling,
h = mean_σ A, f = W h + b, and hook the last BatchNorm before A, whose output z reaches A through
the residual sum and the ReLU only. Then ∂(·)/∂z_{c,σ} = m_{c,σ} (∂(·)/∂h_c) / S with the mask
m = 1[Z > 0] = 1[A ≠ 0], so with ρ_c = mean_σ 1[A_{c,σ} ≠ 0] (activation density, one minus sparsity):

    GAIA-Z_last = mean_c (ρ_c · 1[W_{k*,c} ≠ 0])²,   k* = argmax_k f_k;
    GAIA-A_last = Σ_c ρ_c² / (S · ‖Wᵀ(1 − C p)‖₁) = Σ_c ρ_c² / (S · C · ‖Wᵀ(p − u)‖₁).

Activation sparsity × head weights × p: GAIA-A's last layer is the activation density of the last
map over the ℓ₁ norm of ∇_h KL(u ‖ p) (GradNorm's loss pulled back through W); GAIA-Z's is the
density alone (the head weights enter only where a row of W has exact zeros). Neither needs a
backward pass, but both need the last feature map, which the feature cache (pooled h only) does
not hold: one forward pass of the images. The aggregation over earlier layers genuinely needs
gradients below the head (:func:`gaia_autograd`: one backward for GAIA-Z, two for GAIA-A).
The same rule covers a network whose head reads h = relu(z) directly (S = 1) or h itself (no
activation: ρ = 1); it assumes the last activation is a ReLU (or none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import OODInputError, as_float_tensor, check_logits
from .autograd import check_feature_model
from ..models.anatomy import default_deeper

__all__ = ["GAIA_VARIANTS", "gaia_autograd", "gaia_last_closed_form", "gap_map", "hooked_modules"]

GAIA_VARIANTS = ("a", "z")


def _check_variant(variant: str) -> str:
    if variant not in GAIA_VARIANTS:
        raise OODInputError(f"GAIA variant must be 'a' (channel-wise average) or 'z' (zero-deflation), got {variant!r}")
    return variant


def hooked_modules(model: nn.Module, stages: Sequence[str] | None = None) -> list[str]:
    """The modules whose output gradients GAIA reads: every BatchNorm2d (under the name prefixes
    ``stages``, e.g. ``("layer2", "layer3")``; None = all), or every Conv2d where there is no BatchNorm2d."""
    for kind in (nn.BatchNorm2d, nn.Conv2d):
        names = [n for n, m in model.named_modules() if isinstance(m, kind)]
        if names:
            if stages is not None:
                names = [n for n in names if any(n == s or n.startswith(s + ".") for s in stages)]
                if not names:
                    raise OODInputError(f"stages={list(stages)!r} hold no {kind.__name__} of {type(model).__name__}")
            return names
    raise OODInputError(f"{type(model).__name__} has no BatchNorm2d or Conv2d layer for GAIA to read")


def _forward(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(h, logits, {name: output}) from one pass; each output is replaced downstream by a copy, so
    that an in-place operation after it cannot touch the tensor whose gradient is taken."""
    mods = dict(model.named_modules())
    missing = [n for n in names if n not in mods]
    if missing:
        raise OODInputError(f"{', '.join(map(repr, missing))}: not a module of {type(model).__name__}")
    outs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_m, _i, o):
            outs[name] = o
            return o.clone()
        return hook

    handles = [mods[n].register_forward_hook(keep(n)) for n in names]
    try:
        h = model.features(x)
        f = model.head(h)
    finally:
        for hd in handles:
            hd.remove()
    return h, f, outs


def _as_map(t: torch.Tensor) -> torch.Tensor:
    """(N, C, …) as it is; (N, D) as D channels of one position."""
    return t if t.ndim >= 3 else t.reshape(t.shape[0], -1, 1, 1)


def _zeros(z: torch.Tensor) -> torch.Tensor:
    """No gradient reaches module output z (N, C, …): a zero per channel."""
    return torch.zeros(z.shape[:2], dtype=z.dtype, device=z.device)


def _pick_map(out: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The map A that the features pool: the hooked output, or its ReLU, if its spatial mean is h; else h."""
    tol = (1e-12 if h.dtype == torch.float64 else 1e-5) * max(1.0, float(h.abs().max()))
    if out.shape[0] == h.shape[0] and out.ndim in (2, 4):
        for cand in (_as_map(out), _as_map(torch.relu(out))):
            if cand.shape[1] == h.shape[1] and float((cand.mean((2, 3)) - h).abs().max()) <= tol:
                return cand
    return _as_map(h)


def gap_map(model: nn.Module, x: Any, layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, logits): the last feature map (N, D, H, W) that global average pooling turns into h, from
    one forward pass. ``layer`` (default: the last top-level block before the head, e.g. ``layer3``)
    is hooked; A is its output or that output's ReLU, whichever averages to h; where neither does,
    h itself is the map (a 1 × 1 map: the head reads h directly)."""
    check_feature_model(model)
    layer = layer or default_deeper(model)
    p0 = next(model.parameters())
    x = as_float_tensor(x, "x").to(device=p0.device, dtype=p0.dtype)
    with torch.no_grad():
        h, f, outs = _forward(model, x, [layer])
    return _pick_map(outs[layer], h), f


def gaia_last_closed_form(feature_map: Any, logits: Any, weight: Any, variant: str = "a") -> torch.Tensor:
    """GAIA's abnormality at the last layer (module docstring), from the last map A, the logits and
    the head's W (C, D); larger = OOD. No backward pass."""
    _check_variant(variant)
    a = as_float_tensor(feature_map, "feature_map")
    if a.ndim != 4:
        raise OODInputError(f"feature_map must be (N, D, H, W), got shape {tuple(a.shape)}")
    f = check_logits(logits).to(a.dtype)
    w = as_float_tensor(weight, "weight", ndim=2).to(a.dtype)
    if f.shape[0] != a.shape[0] or w.shape != (f.shape[1], a.shape[1]):
        raise OODInputError(f"shapes do not fit: map {tuple(a.shape)}, logits {tuple(f.shape)}, W {tuple(w.shape)}")
    rho = (a != 0).to(a.dtype).mean((2, 3))  # activation density of each channel
    if variant == "z":
        return (rho * (w[f.argmax(1)] != 0)).pow(2).mean(1)
    C, S = f.shape[1], a.shape[2] * a.shape[3]
    v = (1.0 - C * torch.softmax(f, dim=1)) @ w  # Wᵀ(1 − C p) = ∂(Σ_k log p_k)/∂h
    return rho.pow(2).sum(1) / (S * v.abs().sum(1))


def gaia_autograd(model: nn.Module, x: Any, variant: str = "a", *, modules: Sequence[str] | None = None,
                  stages: Sequence[str] | None = None, layer: str | None = None) -> torch.Tensor:
    """GAIA's abnormality by autograd, as the authors' code computes it (module docstring); larger = OOD.

    ``modules``: the hooked modules (default :func:`hooked_modules` of ``stages``). ``layer``: where
    the last map A is found (see :func:`gap_map`); GAIA-A's output term is read at h,
    ∂(·)/∂A_{c,σ} = (∂(·)/∂h_c) / S exactly, since h = mean_σ A. The model must be in eval mode.
    """
    _check_variant(variant)
    check_feature_model(model)
    if model.training:
        raise OODInputError("put the model in eval mode (model.eval()) before scoring")
    names = list(modules) if modules is not None else hooked_modules(model, stages)
    layer = layer or default_deeper(model)
    p0 = next(model.parameters())
    x = as_float_tensor(x, "x").to(device=p0.device, dtype=p0.dtype).detach().requires_grad_(True)
    with torch.enable_grad():
        h, f, outs = _forward(model, x, list(dict.fromkeys(names + ([layer] if variant == "a" else []))))
        zs = [outs[n] for n in names]
        if variant == "z":
            gs = torch.autograd.grad(f.max(dim=1).values.sum(), zs, allow_unused=True)
            rho = [(_as_map(g) != 0).to(x.dtype).flatten(2).mean(2) if g is not None else _zeros(z)
                   for g, z in zip(gs, zs)]
            return torch.cat(rho, 1).pow(2).mean(1).detach()
        S = _pick_map(outs[layer].detach(), h.detach()).shape[2:].numel()
        (gh,) = torch.autograd.grad(torch.log_softmax(f, dim=1).sum(), [h], retain_graph=True)
        out = (gh.abs().mean(1) / S).sqrt()
        gs = torch.autograd.grad(h.sum(), zs, allow_unused=True)
    inner = torch.cat([_as_map(g).flatten(2).mean(2).abs() if g is not None else _zeros(z) for g, z in zip(gs, zs)], 1)
    return (inner / out[:, None]).pow(2).mean(1).detach()
