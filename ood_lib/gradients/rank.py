"""Where the factorisation of a gradient norm stops: how far each per-sample weight gradient is from
rank one (chapter *Gradient scores and their closed forms*, section *Where the factorisation stops*).

A weight gradient that is one outer product, G = u vᵀ, has entry-wise norms that split,
‖G‖₁ = ‖u‖₁‖v‖₁ and ‖G‖_F = ‖u‖₂‖v‖₂: every nn.Linear layer's per-sample gradient is of this kind
(G = δ aᵀ). A convolution's is a sum over positions, G = Σ_σ δ_σ A_σᵀ, of rank up to
min(C_out, C_in·k_h·k_w, positions), and its norm is a single product only when that sum happens
to have rank one. :func:`rank_one_residual` measures the distance, per image and weight tensor, by
the relative residual of the best rank-one approximation (Eckart–Young):

    r(G) = ‖G − σ₁ u₁ v₁ᵀ‖_F / ‖G‖_F = (Σ_{i≥2} σ_i² / Σ_i σ_i²)^½ ∈ [0, 1),

with G reshaped to (C_out, everything else) and σ_i its singular values. r = 0 (up to rounding)
exactly when G is one outer product. The per-sample gradients come from autograd
(``torch.func.vmap(grad(·))`` over ``functional_call``), not from any layer formula.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._checks import OODInputError
from .signals import check_layer_inputs, loss_targets, sample_loss

__all__ = ["rank_one_residual", "residual_of"]


def residual_of(g: torch.Tensor) -> torch.Tensor:
    """r(G) of each matrix in a batch (N, rows, …), the trailing dimensions flattened into columns;
    0 for a zero matrix."""
    if g.ndim < 3:
        raise OODInputError(f"expected a batch of matrices (N, rows, cols, …), got shape {tuple(g.shape)}")
    m = g.flatten(2)
    if m.shape[1] < m.shape[2]:  # same singular values; LAPACK is much faster on tall matrices
        m = m.transpose(1, 2)
    s2 = torch.linalg.svdvals(m).square()  # descending
    total = s2.sum(1)
    return (s2[:, 1:].sum(1) / total.clamp_min(torch.finfo(g.dtype).tiny)).sqrt()


def rank_one_residual(
    model: nn.Module, x: Any, *, loss: str = "uniform_kl", labels: Any = None, temperature: float = 1.0,
    params: list[str] | None = None, chunk_size: int = 16,
) -> dict[str, torch.Tensor]:
    """``{weight name: (N,) r(∇_θ ℓ_i)}`` for every parameter tensor θ with two or more dimensions
    (or those whose name equals or starts with an entry of ``params``), per image i.

    ``loss`` and ``temperature`` as in :func:`ood_lib.gradients.layers.layer_grad_norms` (default:
    GradNorm's KL(u ‖ p)). The model must be in eval mode; run it in float64 to see rounding as
    ~1e-16. Names are in ``model.named_parameters()`` order.
    """
    from torch.func import functional_call, grad, vmap

    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise OODInputError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    x, labels, T = check_layer_inputs(model, x, loss, labels, temperature)
    if x.ndim < 2 or x.shape[0] == 0:
        raise OODInputError(f"x must be a non-empty batch (N, C, …), got shape {tuple(x.shape)}")
    named = dict(model.named_parameters())
    chosen = {n: p.detach() for n, p in named.items() if p.ndim >= 2 and
              (params is None or any(n == k or n.startswith(k + ".") for k in params))}
    if not chosen:
        raise OODInputError(f"params={params!r} select no weight tensor with two or more dimensions")
    rest = {n: p.detach() for n, p in named.items() if n not in chosen}
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        q = loss_targets(model(x), loss, labels)

    def loss_fn(theta, xi, qi):
        return sample_loss(functional_call(model, ({**rest, **theta}, buffers), (xi[None],))[0], qi, loss, T)

    per_sample = vmap(grad(loss_fn), in_dims=(None, 0, 0))
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in chosen}
    for s in range(0, x.shape[0], chunk_size):
        with torch.no_grad():
            g = per_sample(chosen, x[s : s + chunk_size], q[s : s + chunk_size])
            for n in chosen:
                parts[n].append(residual_of(g[n]))
    return {n: torch.cat(v) for n, v in parts.items()}
