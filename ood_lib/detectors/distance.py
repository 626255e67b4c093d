"""Detectors that read the geometry of the ID training features: Mahalanobis, KNN, ViM, fDBD, NNGuide.

Each is fitted on the ID *training* split only (:class:`~.base.FitData`; fitted attributes end in
``_``) and reads the cached (h, logits) and, where its formula needs it, the head (W, b): none runs
the backbone again. Each declares when it cannot be fitted honestly (:meth:`not_applicable`), so
that the runner reports "n/a: <reason>" instead of a number computed from too little data. Each
class states its formula and how it relates to U·V (chapter *Feature norm × output distribution*).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import OODInputError, check_features
from .base import FitData, FittedDetector, Needs, _f, _h, _head64, register
from .settings import knn_k_for_bank, vim_principal_dim

@register("mahalanobis")
class Mahalanobis(FittedDetector):
    """−min_c (h − μ_c)ᵀ Σ⁻¹ (h − μ_c) with class means μ_c and one shared covariance Σ (Lee et al.
    2018, penultimate layer only, no input pre-processing); ``reg`` adds ``reg`` × mean variance to
    Σ's diagonal.

    Not applicable (rule): when the training split has no class labels; when a class present in
    it has fewer than 2 samples (no within-class spread); or when N − K < D for N samples in K
    classes of D-dimensional features — the pooled within-class covariance then has rank at most
    N − K < D, and Σ⁻¹ would be the regulariser's, not the data's.
    """

    def __init__(self, reg: float = 1e-6) -> None:
        self.reg = reg

    def not_applicable(self, train: FitData | None) -> str | None:
        reason = super().not_applicable(train)
        if reason or train is None:
            return reason
        if train.labels is None or bool((np.asarray(train.labels) < 0).any()):
            return "the ID training split has no class labels for a class-conditional Gaussian"
        classes, counts = np.unique(np.asarray(train.labels), return_counts=True)
        n, k, d = len(train), len(classes), np.shape(train.features)[1]
        if counts.min() < 2:
            return (f"class {classes[counts.argmin()]} has {counts.min()} ID training sample(s) "
                    f"({int((counts < 2).sum())} of {k} classes have fewer than 2): no within-class spread")
        if n - k < d:
            return (f"{n} ID training samples in {k} classes give a pooled covariance of rank at most "
                    f"N − K = {n - k} < D = {d} feature dimensions: its inverse would be the regulariser's")
        return None

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "Mahalanobis":
        t = FitData.of(train, logits, labels)
        h = check_features(t.features).double()
        if t.labels is None:
            raise OODInputError("Mahalanobis.fit needs class labels for every training sample")
        y = torch.as_tensor(np.asarray(t.labels.cpu() if torch.is_tensor(t.labels) else t.labels),
                            dtype=torch.long, device=h.device)
        if len(y) != len(h):
            raise OODInputError(f"Mahalanobis.fit: {len(h)} features but {len(y)} labels")
        if bool((y < 0).any()):
            raise OODInputError("Mahalanobis.fit needs class labels for every training sample")
        classes = torch.unique(y)
        self.means_ = torch.stack([h[y == c].mean(0) for c in classes])
        centred = h - self.means_[torch.searchsorted(classes, y)]
        cov = centred.T @ centred / len(h)
        cov += self.reg * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device) * cov.diagonal().mean()
        self.precision_ = torch.linalg.inv(cov)
        return self

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        self._check_fitted()
        h = check_features(features).double()
        mp = self.means_ @ self.precision_
        const = (mp * self.means_).sum(1)
        hp = h @ self.precision_
        # (h − μ)ᵀ P (h − μ) = hᵀPh − 2 hᵀPμ + μᵀPμ, without an (N, C, D) intermediate
        m = (hp * h).sum(1, keepdim=True) - 2.0 * h @ mp.T + const[None]
        return -m.amin(dim=1)


@register("knn")
class KNN(FittedDetector):
    """−(distance to the k-th nearest L2-normalised ID training feature) (Sun et al. 2022).

    ``k=None`` (the default) follows the paper's rule for the size of the feature bank,
    :func:`ood_lib.detectors.settings.knn_k_for_bank` (k/N fixed at the published setting: 50 of
    50,000 for CIFAR-10); an explicit ``k`` larger than the training split is not applicable."""

    def __init__(self, k: int | None = None, chunk: int = 2048) -> None:
        self.k, self.chunk = k, chunk

    def not_applicable(self, train: FitData | None) -> str | None:
        reason = super().not_applicable(train)
        if reason is None and train is not None and self.k is not None and self.k > len(train):
            return f"k = {self.k} exceeds the {len(train)} ID training samples"
        return reason

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "KNN":
        data = FitData.of(train, logits, labels)
        h = check_features(data.features).float()
        if self.k is not None and self.k > len(h):
            raise OODInputError(f"KNN: k = {self.k} exceeds the {len(h)} training samples")
        if self.k is None:
            if data.logits is None:
                raise OODInputError("KNN with k=None (the bank-size rule) needs the training logits, for the number of classes")
            self.k_ = knn_k_for_bank(len(h), int(np.shape(data.logits)[1]))
        else:
            self.k_ = int(self.k)
        self.bank_ = F.normalize(h, dim=1)
        return self

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        self._check_fitted()
        q = F.normalize(check_features(features).float(), dim=1)
        out = []
        for i in range(0, len(q), self.chunk):
            sim = q[i : i + self.chunk] @ self.bank_.T.to(q.device)  # cosine similarity; distance² = 2 − 2 sim
            kth = sim.topk(self.k_, dim=1).values[:, -1]
            out.append(-(2.0 - 2.0 * kth).clamp_min(0).sqrt())
        return torch.cat(out)


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
