"""Detectors fitted on the ID *training* features: Mahalanobis, ReAct, KNN.

``fit`` sees the ID training split only (chapter *The evaluation*); fitted attributes end in
``_``. Each declares when it cannot be fitted honestly (:meth:`not_applicable`), so that the
runner reports "n/a: <reason>" instead of a number computed from too little data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import OODInputError, check_features
from .base import FitData, FittedDetector, Needs, head_of, register


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


@register("react")
class ReAct(FittedDetector):
    """Energy T · logsumexp(f̃ / T) of the logits f̃ = W min(h, c) + b recomputed from features
    clipped at c, the ``percentile`` of the ID training activations (Sun et al. 2021)."""

    needs = Needs(features=True, fit=True, model=True)

    def __init__(self, model: Any, percentile: float = 90.0, temperature: float = 1.0) -> None:
        head = head_of(model)
        self.weight = head.weight.detach().cpu().double()
        self.bias = (head.bias.detach().cpu().double() if head.bias is not None
                     else torch.zeros(head.out_features, dtype=torch.float64))
        self.percentile, self.temperature = percentile, temperature

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "ReAct":
        h = check_features(FitData.of(train, logits, labels).features)
        self.threshold_ = float(np.percentile(h.cpu().numpy().ravel(), self.percentile))
        return self

    def score(self, features: Any, logits: Any = None) -> torch.Tensor:
        self._check_fitted()
        h = check_features(features).double().clamp(max=self.threshold_)
        f = h @ self.weight.T.to(h.device) + self.bias.to(h.device)
        T = self.temperature
        return T * torch.logsumexp(f / T, dim=1)


@register("knn")
class KNN(FittedDetector):
    """−(distance to the k-th nearest L2-normalised ID training feature) (Sun et al. 2022).

    ``k=None`` (the default) follows the paper's rule for the size of the feature bank,
    :func:`ood_lib.detectors.modern.knn_k_for_bank` (k/N fixed at the published setting: 50 of
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
            from .modern import knn_k_for_bank  # here, so that the registration order stays the table order

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
