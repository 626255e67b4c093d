"""Baselines published after GradNorm: ViM, ASH, SCALE, DICE, GEN, fDBD, NNGuide; and KNN's rule for k.

Every score here reads the cached (h, logits) and, where the formula needs it, the head (W, b): none
runs the backbone again. A fit sees the ID training split only (:class:`~.base.FitData`).
Hyper-parameters are the papers' own, never tuned here; where a paper publishes one value per
setting, the default follows the number of classes C of the head (:func:`paper_setting`: the CIFAR
value for C ≤ 100, the ImageNet-1k value above). Each class states its formula and one line on how
it relates to U·V (chapter *Feature norm × output distribution*).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import OODInputError, check_features, check_logits
from .base import Detector, FitData, FittedDetector, Needs, head_of, register

# the KNN paper's own (bank size, k): CIFAR-10 with its 50,000 training images, ImageNet-1k with all
# 1,281,167 (Sun et al., ICML 2022; github.com/deeplearning-wisc/knn-ood run_cifar.py, run_imagenet.py)
KNN_SETTINGS = {"cifar": (50_000, 50), "imagenet": (1_281_167, 1000)}


def paper_setting(n_classes: int) -> str:
    """The published setting closest in log C to ``n_classes`` (10 or 1000): "cifar" for C ≤ 100, else "imagenet"."""
    if int(n_classes) < 2:
        raise OODInputError(f"n_classes must be at least 2, got {n_classes}")
    return "cifar" if n_classes <= 100 else "imagenet"


def knn_k_for_bank(n_bank: int, n_classes: int) -> int:
    """k of the KNN detector for a bank of ``n_bank`` ID training features (Sun et al., ICML 2022).

    The paper's rule: k grows in proportion to the bank, k/N fixed (its ImageNet runs use k = 1000
    with the full bank and k = 10 with a 1 % sample). The ratio is the one of the published setting
    closest in classes (:func:`paper_setting`): 50 / 50,000 (CIFAR-10) or 1000 / 1,281,167
    (ImageNet-1k); the two differ by 28 %. k = round(N · ratio), at least 1 and at most N.
    """
    if int(n_bank) < 1:
        raise OODInputError(f"n_bank must be at least 1, got {n_bank}")
    n_ref, k_ref = KNN_SETTINGS[paper_setting(n_classes)]
    return int(min(n_bank, max(1, round(n_bank * k_ref / n_ref))))


def vim_principal_dim(d: int) -> int:
    """ViM's principal dimension for D-dimensional features (Wang et al., CVPR 2022, implementation details):
    1000 if D ≥ 1500, 512 if D = 768, D/2 otherwise."""
    return 1000 if d >= 1500 else 512 if d == 768 else d // 2


# --- shared checks ----------------------------------------------------------------------------
def _head64(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    head = head_of(model)
    w = head.weight.detach().cpu().double()
    b = head.bias.detach().cpu().double() if head.bias is not None else torch.zeros(len(w), dtype=torch.float64)
    return w, b


def _h(features: Any, w: torch.Tensor) -> torch.Tensor:
    """(N, D) float64 features; D must be the head's (or the bank's) width, ``w.shape[1]``."""
    h = check_features(features).double()
    if h.shape[1] != w.shape[1]:
        raise OODInputError(f"features: have D = {h.shape[1]} columns but the detector takes D = {w.shape[1]}")
    return h


def _f(logits: Any, n: int, c: int | None) -> torch.Tensor:
    f = check_logits(logits).double()
    if f.shape[0] != n:
        raise OODInputError(f"logits: have {f.shape[0]} rows but the features have {n}; they must be the same samples")
    if c is not None and f.shape[1] != c:
        raise OODInputError(f"logits: have C = {f.shape[1]} columns but the head has C = {c} classes")
    return f


def _percent(p: float, name: str) -> float:
    p = float(p)
    if not 0.0 <= p < 100.0:
        raise OODInputError(f"{name} must be in [0, 100), got {p}")
    return p


def _n_kept(d: int, percentile: float) -> int:
    """Activations kept above the percentile, as the ASH / SCALE code counts them (at least one)."""
    return max(1, d - int(np.round(d * percentile / 100.0)))


def _top_mask(h: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros_like(h, dtype=torch.bool).scatter_(1, h.topk(k, dim=1).indices, True)


@register("vim")
class ViM(FittedDetector):
    """ViM (Wang, Li, Feng & Zhang, CVPR 2022): s = logsumexp_k f_k − α‖R_⊥ᵀ(h − o)‖₂, higher = ID.

    o = −(Wᵀ)⁺b; R_⊥ spans the eigenvectors of the ID training matrix (1/N)Σ(h − o)(h − o)ᵀ beyond the
    first ``dim`` (principal space, Eq. 4; ``dim`` by :func:`vim_principal_dim`); α = mean max-logit /
    mean residual norm on the ID training split (Eq. 6). The paper's score, the softmax probability of
    the virtual logit α‖·‖, is a decreasing function of s: same ranking.
    U·V: energy (a V term) minus α × the feature norm outside the ID principal subspace (a U term on
    the residual), added, not multiplied.

    Not applicable when N ≤ ``dim``: N training features then lie inside the principal space, their
    residuals vanish and α is undefined.
    """

    needs = Needs(features=True, logits=True, fit=True, model=True)

    def __init__(self, model: Any, dim: int | None = None) -> None:
        self.weight, self.bias = _head64(model)
        d = self.weight.shape[1]
        self.dim = vim_principal_dim(d) if dim is None else int(dim)
        if not 1 <= self.dim < d:
            raise OODInputError(f"ViM: dim must be in [1, D) = [1, {d}), got {self.dim}")

    def not_applicable(self, train: FitData | None) -> str | None:
        reason = super().not_applicable(train)
        if reason is None and train is not None and len(train) <= self.dim:
            return (f"{len(train)} ID training samples lie inside the {self.dim}-dimensional principal space: "
                    "their residuals vanish and α is undefined")
        return reason

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "ViM":
        h = _h(FitData.of(train, logits, labels).features, self.weight)
        if len(h) <= self.dim:
            raise OODInputError(f"ViM.fit: {len(h)} samples, need more than dim = {self.dim}")
        origin = -torch.linalg.pinv(self.weight) @ self.bias
        x = h - origin
        _, vecs = torch.linalg.eigh(x.T @ x / len(x))  # ascending eigenvalues
        basis = vecs[:, : h.shape[1] - self.dim]
        residual = (x @ basis).norm(dim=1).mean()
        if not residual > 0:
            raise OODInputError("ViM.fit: the ID training features have no residual outside the principal space")
        max_logit = (h @ self.weight.T + self.bias).amax(dim=1).mean()
        self.origin_, self.residual_basis_, self.alpha_ = origin, basis, float(max_logit / residual)
        return self

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        self._check_fitted()
        h = _h(features, self.weight)
        f = _f(logits, len(h), self.weight.shape[0])
        r = ((h - self.origin_.to(h.device)) @ self.residual_basis_.to(h.device)).norm(dim=1)
        return torch.logsumexp(f, dim=1) - self.alpha_ * r


# --- ASH and SCALE: reshape h, recompute the logits through the head, then energy --------------
ASH_PERCENTILE = {"s": {"cifar": 95.0, "imagenet": 90.0}, "p": {"cifar": 90.0, "imagenet": 60.0},
                  "b": {"cifar": 95.0, "imagenet": 65.0}}


@register("ash")
class ASH(Detector):
    """ASH (Djurisic, Bozanic, Ashok & Liu, ICLR 2023), variant ASH-S by default: energy of
    f̃ = W h̃ + b with h̃ = exp(s₁/s₂) · h ⊙ 1[h among the top k], s₁ = Σ_j h_j, s₂ = Σ_top-k h_j,
    k = D − round(D·p/100) (ASH-P: h̃ = h ⊙ 1[top k]; ASH-B: h̃ = (s₁/k) · 1[top k]).

    p: the paper's per-setting value (ASH-S@95 on CIFAR, @90 on ImageNet-1k ResNet-50; P@90/@60,
    B@95/@65), which the authors picked from a sweep of p on their benchmarks' OOD sets (their
    ``run.py`` grid); used as published, not tuned here. Applied to the pooled
    penultimate h, as the authors' ResNet code does (``apply_ash`` after ``avgpool``, before ``fc``).
    Assumes h ≥ 0 (post-ReLU); where s₂ = 0 the factor is 1 (then h̃ = 0 and f̃ = b whatever it is).
    U·V: rescales the (pruned) logits W h by exp(‖h‖₁ / ‖top-k(h)‖₁), a ratio of feature norms.
    """

    needs = Needs(features=True, model=True)

    def __init__(self, model: Any, percentile: float | None = None, variant: str = "s") -> None:
        if variant not in ASH_PERCENTILE:
            raise OODInputError(f"ASH variant must be one of s, p, b; got {variant!r}")
        self.weight, self.bias = _head64(model)
        self.variant = variant
        default = ASH_PERCENTILE[variant][paper_setting(self.weight.shape[0])]
        self.percentile = _percent(default if percentile is None else percentile, "ASH percentile")

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        h = _h(features, self.weight)
        k = _n_kept(h.shape[1], self.percentile)
        keep = _top_mask(h, k)
        s1 = h.sum(1, keepdim=True)
        if self.variant == "b":
            shaped = keep * (s1 / k)
        else:
            shaped = h * keep
            if self.variant == "s":
                s2 = shaped.sum(1, keepdim=True)
                shaped = shaped * torch.exp(torch.where(s2 != 0, s1 / s2.where(s2 != 0, 1.0), 1.0))
        f = shaped @ self.weight.T.to(h.device) + self.bias.to(h.device)
        return torch.logsumexp(f, dim=1)


@register("scale")
class SCALE(Detector):
    """SCALE (Xu, Chen, Franchi & Yao, ICLR 2024): energy of f̃ = exp(s₁/s₂) · W h + b, with s₁, s₂ as
    in ASH-S but h itself not pruned (the paper's point: pruning hurts, scaling helps).

    p = 85, the authors' published setting (ImageNet-1k ResNet-50; their config ``scale.yml``, no
    search on OOD data); the paper gives no other, so it is also the default here for CIFAR-size
    heads. Applied to the pooled h (their ``ScaleNet``: the feature reshaped to (B, D, 1, 1)).
    U·V: energy at a per-sample temperature 1/exp(‖h‖₁ / ‖top-k(h)‖₁) (exactly so when b = 0).
    """

    needs = Needs(features=True, model=True)

    def __init__(self, model: Any, percentile: float = 85.0) -> None:
        self.weight, self.bias = _head64(model)
        self.percentile = _percent(percentile, "SCALE percentile")

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        h = _h(features, self.weight)
        s1 = h.sum(1)
        s2 = h.topk(_n_kept(h.shape[1], self.percentile), dim=1).values.sum(1)
        r = torch.where(s2 != 0, s1 / s2.where(s2 != 0, 1.0), 1.0)
        f = torch.exp(r)[:, None] * (h @ self.weight.T.to(h.device)) + self.bias.to(h.device)
        return torch.logsumexp(f, dim=1)


@register("dice")
class DICE(FittedDetector):
    """DICE (Sun & Li, ECCV 2022): energy of f = (M ⊙ W) h + b, with M keeping the entries of the
    contribution matrix V = W ⊙ 1 h̄ᵀ (V_cj = w_cj · h̄_j, h̄ the mean ID training feature) above its
    ``sparsity``-quantile (linear interpolation, as numpy.percentile in the authors' code).

    sparsity p = 0.9 for CIFAR, 0.7 for ImageNet-1k: the paper's values (``demo-cifar.sh`` uses
    --p 90), chosen by the authors, not tuned here.
    U·V: no norm factor; it sparsifies the head, then reads the energy (V term) of the sparse head.
    """

    needs = Needs(features=True, fit=True, model=True)

    def __init__(self, model: Any, sparsity: float | None = None) -> None:
        self.weight, self.bias = _head64(model)
        default = {"cifar": 0.9, "imagenet": 0.7}[paper_setting(self.weight.shape[0])]
        self.sparsity = float(default if sparsity is None else sparsity)
        if not 0.0 <= self.sparsity < 1.0:
            raise OODInputError(f"DICE sparsity must be in [0, 1), got {sparsity!r}")

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "DICE":
        mean = _h(FitData.of(train, logits, labels).features, self.weight).mean(0).cpu()
        contrib = (self.weight * mean[None, :]).numpy()
        mask = torch.from_numpy(contrib > np.percentile(contrib, 100 * self.sparsity))
        self.mean_, self.masked_weight_ = mean, self.weight * mask
        return self

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        self._check_fitted()
        h = _h(features, self.weight)
        return torch.logsumexp(h @ self.masked_weight_.T.to(h.device) + self.bias.to(h.device), dim=1)


@register("gen")
class GEN(Detector):
    """GEN (Liu, Lochman & Zach, CVPR 2023): −Σ_{j in the top M of p} p_j^γ (1 − p_j)^γ, p = softmax(f).

    γ = 0.1, M = 100: the paper's values (and the authors' ``benchmark.py`` defaults); with fewer
    than M classes, all C. U·V: a pure V term (a generalised entropy of p), U = 1.
    """

    needs = Needs(logits=True)

    def __init__(self, gamma: float = 0.1, top_m: int = 100) -> None:
        try:
            g, m = float(gamma), int(top_m)
        except (TypeError, ValueError) as exc:
            raise OODInputError(f"GEN needs a number gamma and an integer top_m, got {gamma!r}, {top_m!r}") from exc
        if not (math.isfinite(g) and g > 0) or m < 1:
            raise OODInputError(f"GEN needs gamma > 0 (finite) and top_m ≥ 1, got gamma={gamma!r}, top_m={top_m!r}")
        self.gamma, self.top_m = g, m

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        p = torch.softmax(check_logits(logits).double(), dim=1)
        top = p.topk(min(self.top_m, p.shape[1]), dim=1).values
        return -(top.pow(self.gamma) * (1 - top).pow(self.gamma)).sum(1)


@register("fdbd")
class FDBD(FittedDetector):
    """fDBD (Liu & Qin, ICML 2024): mean feature distance to the decision boundaries of the
    predicted class c, over the distance to the ID training mean μ,
    s = (1/(C−1)) Σ_{i≠c} |f_c − f_i| / ‖w_c − w_i‖₂ / ‖h − μ‖₂, higher = ID.

    No hyper-parameter (the paper's main variant, normalised by ‖h − μ‖; the authors' ``run_cifar.py``).
    U·V: a logit-gap V term (boundary distances) divided by a feature norm around the ID mean.
    """

    needs = Needs(features=True, logits=True, fit=True, model=True)

    def __init__(self, model: Any) -> None:
        w, _ = _head64(model)
        dist = torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist")
        off = ~torch.eye(len(w), dtype=torch.bool)
        if bool((dist[off] == 0).any()):
            raise OODInputError("fDBD: two rows of the head's W are equal, so their decision boundary is undefined")
        self.weight, self.boundary_norm = w, dist.masked_fill(~off, 1.0)

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "FDBD":
        self.mean_ = _h(FitData.of(train, logits, labels).features, self.weight).mean(0).cpu()
        return self

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        self._check_fitted()
        h = _h(features, self.weight)
        f = _f(logits, len(h), self.weight.shape[0])
        top, c = f.max(dim=1)
        gaps = (top[:, None] - f) / self.boundary_norm.to(h.device)[c]  # the i = c term is 0
        spread = (h - self.mean_.to(h.device)).norm(dim=1).clamp_min(torch.finfo(h.dtype).tiny)
        return gaps.sum(1) / (f.shape[1] - 1) / spread


@register("nnguide")
class NNGuide(FittedDetector):
    """NNGuide (Park, Jung & Teoh, ICCV 2023): S(x) · G(x), S = logsumexp f (energy confidence),
    G = the mean of the k largest ⟨ĥ, S(x_i) ĥ_i⟩ over the guidance bank {S(x_i) ĥ_i} of ID training
    features (ĥ = h/‖h‖₂).

    k = 10: the authors' code (``configs/detector/nnguide.yaml``). Their bank is a random 1 % of
    ImageNet-1k's training set, for cost; ``bank_fraction`` = 1 (the whole fit split) is the default
    here because the fit splits of these benchmarks are small (a fraction < 1 draws with ``seed``).
    U·V: energy (V) times a KNN cosine similarity to ID features (a feature-direction term, U-like).
    """

    needs = Needs(features=True, logits=True, fit=True)

    def __init__(self, k: int = 10, bank_fraction: float = 1.0, seed: int = 0, chunk: int = 2048) -> None:
        if int(k) < 1 or not 0 < float(bank_fraction) <= 1:
            raise OODInputError(f"NNGuide needs k ≥ 1 and 0 < bank_fraction ≤ 1, got {k!r}, {bank_fraction!r}")
        self.k, self.bank_fraction, self.seed, self.chunk = int(k), float(bank_fraction), int(seed), int(chunk)

    def _bank_size(self, n: int) -> int:
        return max(1, int(n * self.bank_fraction))

    def not_applicable(self, train: FitData | None) -> str | None:
        reason = super().not_applicable(train)
        if reason or train is None:
            return reason
        if train.logits is None:
            return "the ID training split has no logits to weight the guidance bank by"
        if self.k > self._bank_size(len(train)):
            return f"k = {self.k} exceeds the {self._bank_size(len(train))} features of the guidance bank"
        return None

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "NNGuide":
        t = FitData.of(train, logits, labels)
        h = check_features(t.features).double()
        if t.logits is None:
            raise OODInputError("NNGuide.fit needs the logits of the ID training split")
        f = _f(t.logits, len(h), None)
        n = self._bank_size(len(h))
        if self.k > n:
            raise OODInputError(f"NNGuide: k = {self.k} exceeds the {n} features of the guidance bank")
        idx = np.sort(np.random.default_rng(self.seed).permutation(len(h))[:n]) if n < len(h) else np.arange(n)
        idx = torch.from_numpy(idx)
        self.bank_ = (F.normalize(h[idx], dim=1) * torch.logsumexp(f[idx], dim=1)[:, None]).float()
        return self

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        self._check_fitted()
        h = _h(features, self.bank_)
        f = _f(logits, len(h), None)
        q = F.normalize(h, dim=1).float()
        bank = self.bank_.T.to(q.device)
        guide = torch.cat([(q[i : i + self.chunk] @ bank).topk(self.k, dim=1).values.double().mean(1)
                           for i in range(0, len(q), self.chunk)])
        return torch.logsumexp(f, dim=1) * guide
