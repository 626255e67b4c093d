"""Baselines that need a fit on ID *training* features (Mahalanobis, ReAct, KNN) or the model (ODIN).

Detector API (scikit-learn style): ``__init__`` stores hyper-parameters, ``fit(h, logits, labels)``
returns ``self`` and sets attributes ending in ``_``, ``score(h, logits)`` returns one number per
sample, oriented so that higher = more in-distribution. The evaluation runner calls ``fit`` with
the ID training split only (chapter *The evaluation*).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import OODInputError, check_features


class _Detector:
    def _check_fitted(self) -> None:
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise OODInputError(f"{type(self).__name__} is not fitted; call fit() on ID training features first")


class Mahalanobis(_Detector):
    """−min_c (h − μ_c)ᵀ Σ⁻¹ (h − μ_c) with class means μ_c and one shared covariance Σ (Lee et al. 2018,
    penultimate layer only, no input pre-processing)."""

    def __init__(self, reg: float = 1e-6) -> None:
        self.reg = reg

    def fit(self, h: Any, logits: Any, labels: Any) -> "Mahalanobis":
        h = check_features(h).double()
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(y) != len(h):
            raise OODInputError(f"Mahalanobis.fit: {len(h)} features but {len(y)} labels")
        if bool((y < 0).any()):
            raise OODInputError("Mahalanobis.fit needs class labels for every training sample")
        classes = torch.unique(y)
        self.means_ = torch.stack([h[y == c].mean(0) for c in classes])
        centred = h - self.means_[torch.searchsorted(classes, y)]
        cov = centred.T @ centred / len(h)
        cov += self.reg * torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean()
        self.precision_ = torch.linalg.inv(cov)
        return self

    def score(self, h: Any, logits: Any = None) -> np.ndarray:
        self._check_fitted()
        h = check_features(h).double()
        mp = self.means_ @ self.precision_
        const = (mp * self.means_).sum(1)
        hp = h @ self.precision_
        # (h − μ)ᵀ P (h − μ) = hᵀPh − 2 hᵀPμ + μᵀPμ, without an (N, C, D) intermediate
        m = (hp * h).sum(1, keepdim=True) - 2.0 * h @ mp.T + const[None]
        return (-m.amin(dim=1)).numpy()


class ReAct(_Detector):
    """Energy of the logits recomputed from features clipped at the ``percentile`` of ID training
    activations (Sun et al. 2021)."""

    def __init__(self, weight: Any, bias: Any, percentile: float = 90.0, temperature: float = 1.0) -> None:
        self.weight = torch.as_tensor(np.asarray(weight), dtype=torch.float64)
        self.bias = torch.as_tensor(np.asarray(bias), dtype=torch.float64)
        self.percentile, self.temperature = percentile, temperature

    def fit(self, h: Any, logits: Any = None, labels: Any = None) -> "ReAct":
        h = check_features(h)
        self.threshold_ = float(np.percentile(h.numpy().ravel(), self.percentile))
        return self

    def score(self, h: Any, logits: Any = None) -> np.ndarray:
        self._check_fitted()
        h = check_features(h).double().clamp(max=self.threshold_)
        f = h @ self.weight.T + self.bias
        T = self.temperature
        return (T * torch.logsumexp(f / T, dim=1)).numpy()


class KNN(_Detector):
    """−(distance to the k-th nearest L2-normalised ID training feature) (Sun et al. 2022)."""

    def __init__(self, k: int = 50, chunk: int = 2048) -> None:
        self.k, self.chunk = k, chunk

    def fit(self, h: Any, logits: Any = None, labels: Any = None) -> "KNN":
        h = check_features(h).float()
        if self.k > len(h):
            raise OODInputError(f"KNN: k = {self.k} exceeds the {len(h)} training samples")
        self.bank_ = F.normalize(h, dim=1)
        return self

    def score(self, h: Any, logits: Any = None) -> np.ndarray:
        self._check_fitted()
        q = F.normalize(check_features(h).float(), dim=1)
        out = []
        for i in range(0, len(q), self.chunk):
            sim = q[i : i + self.chunk] @ self.bank_.T  # cosine similarity; distance² = 2 − 2 sim
            kth = sim.topk(self.k, dim=1).values[:, -1]
            out.append(-(2.0 - 2.0 * kth).clamp_min(0).sqrt())
        return torch.cat(out).numpy()


def odin_scores(
    model: torch.nn.Module, loader, *, temperature: float = 1000.0, epsilon: float = 0.0014,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """ODIN (Liang et al. 2018): MSP at temperature T of the input moved by ε·sign(∇ₓ log max p_T).

    The perturbation is applied in the model's (normalised) input space. Batched: in eval mode
    each sample's input gradient depends on that sample only.
    """
    model = model.eval()
    out = []
    for x, _y, ok in loader:
        x = x[ok].to(device).requires_grad_(True)
        if len(x) == 0:
            continue
        logp = F.log_softmax(model(x) / temperature, dim=1)
        (g,) = torch.autograd.grad(logp.max(dim=1).values.sum(), x)
        with torch.no_grad():
            p = F.softmax(model(x + epsilon * g.sign()) / temperature, dim=1)
        out.append(p.max(dim=1).values.double().cpu())
    return torch.cat(out).numpy()
