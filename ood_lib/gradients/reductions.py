"""The newer last-layer gradient detectors, each by autograd as defined and in closed form.

The chapter *Gradient scores and their closed forms* derives every closed form from one identity:
for a loss of the logits f = W h + b with p = softmax(f / T), the per-sample weight gradient is the
outer product ∇_W ℓ = a hᵀ with a = ∂ℓ/∂f (a = (p − q)/T for a target q summing to one). Each
detector here is a function of that outer product, so each is a function of (h, f) alone — no
backward pass — once the ID statistics it fits (a subspace, two Kronecker factors) are known.

* :func:`gradorth_autograd` / :func:`gradorth_closed_form` — GradOrth (Behpour, Doan, Li, He, Gou
  & Ren, NeurIPS 2023, arXiv 2308.00310): the norm of the loss gradient projected onto the ID
  principal subspace S_k of the last layer's input activations, ‖∇_W ℓ · S_k S_kᵀ‖ =
  ‖a‖₂ · ‖S_kᵀ h‖₂ (Frobenius norm); "a small projection indicates OOD" (the paper's abstract).
  A U·V member whose U is the norm of h inside the ID principal subspace — the complement of
  ViM's residual. k by the energy rule of the gradient-projection literature,
  ‖R_k‖_F² ≥ ε ‖R‖_F² for the uncentred ID representation matrix R, ε = 0.97.
* :func:`kfac_autograd` / :func:`kfac_closed_form` — the natural-gradient norm gᵀF⁻¹g with the
  K-FAC Fisher F ≈ A ⊗ G (Martens & Grosse, ICML 2015) fitted on ID training data (see
  :func:`kfac_factors`): (hᵀA⁻¹h) · (aᵀG⁻¹a).
* :func:`grad_uncertainty_autograd` / :func:`grad_uncertainty_closed_form` — the gradient
  uncertainty of Oberdiek, Rottmann & Gottschalk (ANNPR 2018, arXiv 1805.08440): aggregations of
  ∇_W CE(f, ŷ) with the predicted label ŷ.

The squared-L2 ExGrad, E_{Y~p} ‖∇_W CE(f, Y)‖₂² = ‖h‖₂² (1 − ‖p‖₂²) / T², is the trace of the
last-layer Fisher, registered as ``fisher`` in :mod:`ood_lib.scores.registry` (not repeated here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import OODInputError, check_features, check_logits, check_temperature, unknown_name

__all__ = [
    "GRADORTH_THRESHOLD", "GRADUNC_AGGREGATIONS", "KFAC_TARGETS", "KFACFactors", "grad_uncertainty_autograd",
    "grad_uncertainty_closed_form", "gradorth_autograd", "gradorth_closed_form", "gradorth_subspace",
    "head_weight_gradients", "kfac_autograd", "kfac_closed_form", "kfac_factors",
]

GRADORTH_THRESHOLD = 0.97
KFAC_TARGETS = ("uniform_kl", "pred", "expect_p")
GRADUNC_AGGREGATIONS = ("l1", "l2", "max", "min", "mean", "std")


def _pair(features: Any, logits: Any) -> tuple[torch.Tensor, torch.Tensor]:
    f = check_logits(logits).double()
    return check_features(features, n=f.shape[0]).double().to(f.device), f


def _head64(head: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(head, nn.Linear):
        raise OODInputError(f"head must be an nn.Linear, got {type(head).__name__}")
    b = None if head.bias is None else head.bias.detach().double()
    return head.weight.detach().double(), b


def head_weight_gradients(head: nn.Linear, features: Any, targets: torch.Tensor, *, temperature: float = 1.0,
                          loss: str = "ce") -> torch.Tensor:
    """Per-sample ∇_W ℓ (N, C, D) of the head's weight, by ``torch.func`` (vmap of grad), in float64.

    ``loss="ce"``: ℓ = −Σ_k q_k log p_k; ``loss="kl"``: ℓ = KL(q ‖ p) = Σ_k q_k (log q_k − log p_k)
    (GradNorm's loss for q = u). ``targets`` (N, C) holds one q per sample.
    """
    from torch.func import grad, vmap

    if loss not in ("ce", "kl"):
        raise OODInputError(f"loss must be 'ce' or 'kl', got {loss!r}")
    w, b = _head64(head)
    h = check_features(features).double().to(w.device)
    T = check_temperature(temperature)
    q = torch.as_tensor(targets, dtype=torch.float64, device=w.device)
    if q.shape != (h.shape[0], w.shape[0]):
        raise OODInputError(f"targets: need shape {(h.shape[0], w.shape[0])}, got {tuple(q.shape)}")

    def one(wt: torch.Tensor, hi: torch.Tensor, qi: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(F.linear(hi, wt, b) / T, dim=-1)
        if loss == "kl":
            return (qi * (qi.log() - logp)).sum()
        return -(qi * logp).sum()

    return vmap(grad(one), in_dims=(None, 0, 0))(w, h, q)


def _probs(h: torch.Tensor, head: nn.Linear, T: float) -> torch.Tensor:
    w, b = _head64(head)
    f = h @ w.T + (0.0 if b is None else b)
    return torch.softmax(f / T, dim=1)


# --- GradOrth ---------------------------------------------------------------------------------
def gradorth_subspace(train_features: Any, threshold: float = GRADORTH_THRESHOLD) -> torch.Tensor:
    """The ID principal subspace S_k (D, k) of GradOrth, from ID training features only.

    R = [h_1 … h_N] (D × N, uncentred), R = U Σ Vᵀ; k is the smallest with
    Σ_{i≤k} σ_i² ≥ ``threshold`` · Σ_i σ_i², and S_k holds the first k left singular vectors.
    """
    h = check_features(train_features, name="train_features").double()
    if not 0.0 < float(threshold) <= 1.0:
        raise OODInputError(f"threshold must be in (0, 1], got {threshold!r}")
    evals, evecs = torch.linalg.eigh(h.T @ h)  # R Rᵀ = U Σ² Uᵀ, ascending
    energy = evals.flip(0).clamp_min(0.0)
    if not float(energy.sum()) > 0:
        raise OODInputError("train_features are all zero: there is no principal subspace")
    k = int((energy.cumsum(0) / energy.sum() < float(threshold) - 1e-12).sum()) + 1  # the first k reaching it
    return evecs.flip(1)[:, : min(k, h.shape[1])].contiguous()


def _check_norm(norm: str) -> str:
    if norm not in ("l2", "l1"):
        raise OODInputError(f"norm must be 'l2' (Frobenius) or 'l1' (entry-wise), got {norm!r}")
    return norm


def gradorth_autograd(head: nn.Linear, features: Any, basis: torch.Tensor, *, temperature: float = 1.0,
                      norm: str = "l2") -> torch.Tensor:
    """GradOrth as defined: ‖∇_W KL(u ‖ p) · S_k S_kᵀ‖ per sample, from per-sample autograd gradients."""
    _check_norm(norm)
    h = check_features(features).double()
    T = check_temperature(temperature)
    p = _probs(h, head, T)
    g = head_weight_gradients(head, h, torch.full_like(p, 1.0 / p.shape[1]), temperature=T, loss="kl")
    s = basis.double().to(g.device)
    proj = g @ s @ s.T  # projection onto the subspace acts on the activation side of W
    return proj.flatten(1).norm(dim=1) if norm == "l2" else proj.abs().flatten(1).sum(1)


def gradorth_closed_form(features: Any, logits: Any, basis: torch.Tensor, *, temperature: float = 1.0,
                         norm: str = "l2") -> torch.Tensor:
    """GradOrth without a backward pass: ‖p − u‖₂ ‖S_kᵀ h‖₂ / T (``norm="l1"``: ‖p − u‖₁ ‖S_k S_kᵀ h‖₁ / T)."""
    _check_norm(norm)
    h, f = _pair(features, logits)
    T = check_temperature(temperature)
    a = torch.softmax(f / T, dim=1) - 1.0 / f.shape[1]
    s = basis.double().to(h.device)
    if norm == "l2":
        return a.norm(dim=1) * (h @ s).norm(dim=1) / T
    return a.abs().sum(1) * (h @ s @ s.T).abs().sum(1) / T


# --- the K-FAC natural-gradient norm -----------------------------------------------------------
@dataclass(frozen=True)
class KFACFactors:
    """The damped Kronecker factors of the last-layer Fisher and their inverses (float64)."""

    a_inv: torch.Tensor  # (D, D): (E[h hᵀ] + λ_A I)⁻¹
    g_inv: torch.Tensor  # (C, C): (E_x E_{y~p}[(p − e_y)(p − e_y)ᵀ] / T² + λ_G I)⁻¹
    temperature: float


def kfac_factors(train_features: Any, train_logits: Any, *, temperature: float = 1.0,
                 damping: float = 1e-3) -> KFACFactors:
    """K-FAC's factors F ≈ A ⊗ G of the last layer's Fisher, fitted on ID training data only.

    A = E[h hᵀ] (the uncentred second moment of the features) and G = E_x[diag p − p pᵀ] / T², the
    covariance of ∂ℓ/∂f under labels drawn from the model, y ~ p. Each gets Tikhonov damping
    λ = ``damping`` × (its mean eigenvalue): G is singular along 1 (Σ_k (p − e_y)_k = 0), and every
    a = (p − q)/T with Σ q = 1 is orthogonal to 1, so the damping there never reaches the score.
    """
    h, f = _pair(train_features, train_logits)
    T = check_temperature(temperature)
    if not float(damping) > 0:
        raise OODInputError(f"damping must be > 0, got {damping!r}")
    p = torch.softmax(f / T, dim=1)
    A = h.T @ h / len(h)
    G = (torch.diag(p.mean(0)) - p.T @ p / len(p)) / T**2
    eye = lambda n: torch.eye(n, dtype=torch.float64, device=h.device)  # noqa: E731
    A = A + damping * A.trace() / A.shape[0] * eye(A.shape[0])
    G = G + damping * G.trace() / G.shape[0] * eye(G.shape[0])
    if not (float(A.trace()) > 0 and float(G.trace()) > 0):
        raise OODInputError("kfac_factors: the training features or predictions carry no spread (a zero factor)")
    return KFACFactors(torch.linalg.inv(A), torch.linalg.inv(G), T)


def _check_target(target: str) -> str:
    if target not in KFAC_TARGETS:
        raise unknown_name("natural-gradient target", target, KFAC_TARGETS)
    return target


def _targets(p: torch.Tensor, target: str) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """(weight, q) pairs: the score is Σ weight · gᵀF⁻¹g over them (weight None = 1)."""
    N, C = p.shape
    eye = torch.eye(C, dtype=p.dtype, device=p.device)
    if target == "uniform_kl":
        return [(None, torch.full_like(p, 1.0 / C))]
    if target == "pred":
        return [(None, eye[p.argmax(1)])]
    return [(p[:, y], eye[y].expand(N, C)) for y in range(C)]


def kfac_autograd(head: nn.Linear, features: Any, factors: KFACFactors, *, target: str = "uniform_kl") -> torch.Tensor:
    """gᵀF⁻¹g as defined: per-sample g = vec(∇_W ℓ) by autograd, F⁻¹ = A⁻¹ ⊗ G⁻¹ applied as one matrix.

    vec stacks the columns of the C × D gradient, so that vec(a hᵀ) = h ⊗ a matches A ⊗ G.
    ``target``: "uniform_kl" (GradNorm's loss KL(u ‖ p)), "pred" (CE with the predicted label) or
    "expect_p" (E_{Y~p} of the CE with label Y: C backward passes).
    """
    _check_target(target)
    h = check_features(features).double()
    T = factors.temperature
    p = _probs(h, head, T)
    f_inv = torch.kron(factors.a_inv, factors.g_inv).to(p.device)  # (D·C, D·C)
    out = torch.zeros(len(h), dtype=torch.float64, device=p.device)
    for w, q in _targets(p, target):
        g = head_weight_gradients(head, h, q, temperature=T, loss="kl" if target == "uniform_kl" else "ce")
        v = g.transpose(1, 2).reshape(len(h), -1)  # column-major vec of each C × D gradient
        s = torch.einsum("ni,ij,nj->n", v, f_inv, v)
        out = out + (s if w is None else w * s)
    return out


def _minus_pred(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p − e_ŷ, ŷ) with the ŷ entry formed as −Σ_{j≠ŷ} p_j: no 1 − max p cancellation."""
    top = p.argmax(1, keepdim=True)
    rest = p.scatter(1, top, 0.0)
    return rest.scatter(1, top, -rest.sum(1, keepdim=True)), top


def kfac_closed_form(features: Any, logits: Any, factors: KFACFactors, *, target: str = "uniform_kl") -> torch.Tensor:
    """gᵀF⁻¹g without a backward pass: (hᵀA⁻¹h) · (aᵀG⁻¹a), a = (p − q)/T.

    For "expect_p" the output factor is E_{Y~p}[aᵀG⁻¹a] = tr(G⁻¹ (diag p − p pᵀ)) / T², evaluated
    as (Σ_{y≠ŷ} p_y d_y − rᵀG⁻¹r) / T² with r = p − e_ŷ and d_y = (e_ŷ − e_y)ᵀG⁻¹(e_ŷ − e_y), which
    keeps full precision when max p ≈ 1 (the trace form cancels there).
    """
    _check_target(target)
    h, f = _pair(features, logits)
    T = factors.temperature
    p = torch.softmax(f / T, dim=1)
    m = factors.g_inv.to(h.device)
    u = torch.einsum("nd,de,ne->n", h, factors.a_inv.to(h.device), h)
    if target == "uniform_kl":
        a = p - 1.0 / p.shape[1]
    else:
        a, top = _minus_pred(p)
    quad = torch.einsum("nc,ck,nk->n", a, m, a)
    if target != "expect_p":
        return u * quad / T**2
    k = top[:, 0]
    d = m[k, k][:, None] - 2.0 * m[k] + m.diagonal()[None, :]  # d_y, 0 at y = ŷ
    return u * ((p * d).sum(1) - quad) / T**2


# --- gradient uncertainty (Oberdiek et al. 2018) --------------------------------------------------
_AGG: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "l1": lambda g: g.abs().sum(1), "l2": lambda g: g.norm(dim=1), "max": lambda g: g.amax(1),
    "min": lambda g: g.amin(1), "mean": lambda g: g.mean(1), "std": lambda g: g.std(1, unbiased=False),
}


def _check_aggregation(aggregation: str) -> str:
    if aggregation not in GRADUNC_AGGREGATIONS:
        raise unknown_name("aggregation", aggregation, GRADUNC_AGGREGATIONS)
    return aggregation


def grad_uncertainty_autograd(head: nn.Linear, features: Any, aggregation: str = "l2") -> torch.Tensor:
    """An aggregation (over the C·D entries) of ∇_W CE(f, ŷ), ŷ = argmax p, from autograd gradients."""
    _check_aggregation(aggregation)
    h = check_features(features).double()
    p = _probs(h, head, 1.0)
    eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
    g = head_weight_gradients(head, h, eye[p.argmax(1)], loss="ce")
    return _AGG[aggregation](g.flatten(1))


def grad_uncertainty_closed_form(features: Any, logits: Any, aggregation: str = "l2") -> torch.Tensor:
    """The same without a backward pass. With a = p − e_ŷ (a_ŷ = −(1 − max p), the others p_j):

    l1 = 2‖h‖₁(1 − max p) (= ``ce_pred``); l2 = ‖h‖₂ ‖a‖₂, ‖a‖₂² = (1 − max p)² + Σ_{j≠ŷ} p_j²;
    max / min = the largest / smallest of the four products of {max_{j≠ŷ} p_j, −(1 − max p)} and
    {max h, min h} (a bilinear form is extreme at the corners); mean = 0 (Σ_k a_k = 0);
    std = ‖h‖₂ ‖a‖₂ / √(C·D) (a multiple of l2).
    """
    _check_aggregation(aggregation)
    h, f = _pair(features, logits)
    p = torch.softmax(f, dim=1)
    rest = p.scatter(1, p.argmax(1, keepdim=True), 0.0)  # the small probabilities: no 1 − max p cancellation
    miss = rest.sum(1)  # 1 − max p
    if aggregation == "l1":
        return 2.0 * h.abs().sum(1) * miss
    a2 = (miss * miss + (rest * rest).sum(1)).sqrt()
    if aggregation in ("l2", "std"):
        scale = 1.0 if aggregation == "l2" else (p.shape[1] * h.shape[1]) ** -0.5
        return scale * h.norm(dim=1) * a2
    if aggregation == "mean":
        return torch.zeros_like(miss)
    corners = torch.stack([rest.amax(1) * h.amax(1), rest.amax(1) * h.amin(1), -miss * h.amax(1), -miss * h.amin(1)])
    return corners.amax(0) if aggregation == "max" else corners.amin(0)
