"""Gradient detectors published after GradNorm, in their closed forms where they have one.

Each class says what it reads, whether it needs a backward pass, and the published definition it
reduces (derivations: :mod:`ood_lib.gradients.reductions`, :mod:`ood_lib.gradients.gaia`; chapter *Gradient scores
and their closed forms*). Fits see the ID training split only; hyper-parameters are the papers'
where a paper fixes one, never tuned on OOD data.

* GradOrth, the K-FAC natural-gradient norm and the gradient uncertainty of Oberdiek et al. are
  functions of the cached (h, logits): no backward pass, no forward pass.
* GAIA at the last layer needs the last feature map: one forward pass of the images, no backward.
* GAIA over the hooked layers needs gradients below the head: one (GAIA-Z) or two (GAIA-A)
  backward passes of the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._checks import OODInputError
from ..gradients.gaia import gaia_autograd, gaia_last_closed_form, gap_map
from ..gradients.reductions import (
    GRADORTH_THRESHOLD,
    grad_uncertainty_closed_form,
    gradorth_closed_form,
    gradorth_subspace,
    kfac_closed_form,
    kfac_factors,
)
from .base import Detector, FitData, FittedDetector, Needs, add, head_of, register


@register("gradorth")
class GradOrth(FittedDetector):
    """GradOrth (Behpour et al., NeurIPS 2023): ‖∇_W KL(u ‖ p) · S_k S_kᵀ‖ = ‖p − u‖₂ ‖S_kᵀ h‖₂ / T,
    higher = ID ("a small projection value indicates OOD"). No backward pass.

    S_k: the first k left singular vectors of the uncentred ID training features, k the smallest with
    ``threshold`` = 0.97 of the squared singular values (the energy rule of gradient-projection
    methods). What could not be read from the paper's text here and is a choice: the loss
    (GradNorm's KL(u ‖ p)), the Frobenius norm (``norm="l1"`` gives the entry-wise one), ε = 0.97.
    U·V: ‖p − u‖₂ times the norm of h inside the ID principal subspace (ViM reads the complement).
    """

    family = "gradient"
    needs = Needs(features=True, logits=True, fit=True)

    def __init__(self, threshold: float = GRADORTH_THRESHOLD, norm: str = "l2", temperature: float = 1.0) -> None:
        self.threshold, self.norm, self.temperature = threshold, norm, temperature

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "GradOrth":
        self.basis_ = gradorth_subspace(FitData.of(train, logits, labels).features, self.threshold)
        return self

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        self._check_fitted()
        return gradorth_closed_form(features, logits, self.basis_, temperature=self.temperature, norm=self.norm)


class KFACNatGrad(FittedDetector):
    """The natural-gradient norm gᵀF⁻¹g of the last layer, F ≈ A ⊗ G by K-FAC on ID training data:
    (hᵀA⁻¹h) · ((p − q)ᵀG⁻¹(p − q)) / T², A = E[h hᵀ], G = E[diag p − p pᵀ] / T² (damped).
    No backward pass. ``target``: q = u (GradNorm's loss, the default), "pred" or "expect_p".

    What it says about GradNorm and Mahalanobis: GradNorm is ‖h‖₁ · ‖p − u‖₁, a feature norm times an
    output term, both in the Euclidean geometry of the parameters. Measuring the same gradient in
    the Fisher's geometry keeps the product and whitens each factor: the feature factor becomes
    hᵀA⁻¹h, a Mahalanobis-type distance of h from the origin under the *uncentred* second moment
    A = Σ + μμᵀ (by Sherman–Morrison hᵀA⁻¹h = hᵀΣ⁻¹h − (μᵀΣ⁻¹h)²/(1 + μᵀΣ⁻¹μ)), not Mahalanobis'
    class-centred distance; the output factor becomes ‖p − u‖ whitened by the spread of ID
    predictions. GradNorm and (a class-agnostic) Mahalanobis are thus the two factors of one U·V
    product, each read in a different metric; neither needs the gradient.

    Read as GradNorm is (a larger gradient = ID); the feature factor grows away from the ID
    features, so ``flipped=True`` gives the other reading, and both are registered.
    """

    family = "gradient"
    needs = Needs(features=True, logits=True, fit=True)

    def __init__(self, target: str = "uniform_kl", damping: float = 1e-3, temperature: float = 1.0,
                 flipped: bool = False) -> None:
        self.target, self.damping, self.temperature, self.flipped = target, damping, temperature, flipped

    def not_applicable(self, train: FitData | None) -> str | None:
        reason = super().not_applicable(train)
        if reason is None and train is not None and train.logits is None:
            return "the ID training split has no logits to fit the output factor G"
        return reason

    def fit(self, train: Any, logits: Any = None, labels: Any = None) -> "KFACNatGrad":
        t = FitData.of(train, logits, labels)
        if t.logits is None:
            raise OODInputError("KFACNatGrad.fit needs the logits of the ID training split")
        self.factors_ = kfac_factors(t.features, t.logits, temperature=self.temperature, damping=self.damping)
        return self

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        self._check_fitted()
        s = kfac_closed_form(features, logits, self.factors_, target=self.target)
        return -s if self.flipped else s


add("kfac_natgrad", KFACNatGrad)
add("kfac_natgrad_flipped", KFACNatGrad, flipped=True)


class GradUncertainty(Detector):
    """Gradient uncertainty (Oberdiek, Rottmann & Gottschalk, ANNPR 2018): an aggregation of
    ∇_W CE(f, ŷ) with the predicted label ŷ, read as published (a larger gradient = less certain,
    so −value, higher = ID). No backward pass:

    ℓ₂: ‖h‖₂ ((1 − max p)² + Σ_{j≠ŷ} p_j²)^½; max: the largest product of {max_{j≠ŷ} p_j, −(1 − max p)}
    and {max h, min h} (= ‖h‖_∞ max_{j≠ŷ} p_j for h ≥ 0). The ℓ₁ aggregation is ``ce_pred_flipped``,
    the mean is 0 and the standard deviation a multiple of ℓ₂, so only ℓ₂ and max are registered.
    U·V: mixed orientation, like the predicted-label CE.
    """

    family = "gradient"
    needs = Needs(features=True, logits=True)

    def __init__(self, aggregation: str = "l2") -> None:
        self.aggregation = aggregation

    def score(self, features: Any, logits: Any) -> torch.Tensor:
        return -grad_uncertainty_closed_form(features, logits, self.aggregation)


add("gradunc_l2", GradUncertainty, aggregation="l2")
add("gradunc_max", GradUncertainty, aggregation="max")


def _batches(loader: Any, device: torch.device | str, chunk: int):
    for x, _y, ok in loader:
        x = x[ok]
        for i in range(0, len(x), chunk):
            yield x[i : i + chunk].to(device)


class GAIALast(Detector):
    """GAIA (Chen et al., NeurIPS 2023) at the last layer, in closed form (:mod:`ood_lib.gradients.gaia`):
    GAIA-A_last = Σ_c ρ_c² / (S · ‖Wᵀ(1 − C p)‖₁), GAIA-Z_last = mean_c (ρ_c 1[W_{k*,c} ≠ 0])², with ρ_c
    the activation density of channel c of the last map; −abnormality, higher = ID.

    No backward pass, but one forward pass of the images: the feature cache holds the pooled h, not
    the map. ``layer``: the module whose output (or its ReLU) is that map (default: the last block).
    """

    family = "gradient"
    needs = Needs(model=True, inputs=True)

    def __init__(self, model: torch.nn.Module, variant: str = "a", layer: str | None = None, chunk: int = 256) -> None:
        self.model, self.variant, self.layer, self.chunk = model, variant, layer, chunk

    def score_inputs(self, loader: Any, device: torch.device | str = "cpu") -> torch.Tensor:
        model = self.model.to(device).eval()
        w = head_of(model).weight.detach()
        out = []
        for x in _batches(loader, device, self.chunk):
            a, f = gap_map(model, x, self.layer)
            out.append(-gaia_last_closed_form(a.double(), f.double(), w.double(), self.variant).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


class GAIA(Detector):
    """GAIA (Chen et al., NeurIPS 2023) as the authors compute it, by autograd over the hooked layers
    (every BatchNorm2d, or those under the name prefixes ``stages``): −abnormality, higher = ID.

    Needs gradients below the head: one backward pass (GAIA-Z) or two (GAIA-A) per batch.
    """

    family = "autograd"
    needs = Needs(model=True, inputs=True)

    def __init__(self, model: torch.nn.Module, variant: str = "a", stages: Sequence[str] | None = None,
                 layer: str | None = None, chunk: int = 64) -> None:
        self.model, self.variant, self.layer, self.chunk = model, variant, layer, chunk
        self.stages = None if stages is None else tuple(stages)

    def score_inputs(self, loader: Any, device: torch.device | str = "cpu") -> torch.Tensor:
        model = self.model.to(device).eval()
        out = [-gaia_autograd(model, x, self.variant, stages=self.stages, layer=self.layer).double().cpu()
               for x in _batches(loader, device, self.chunk)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


add("gaia_last", GAIALast, variant="a")
add("gaia_z_last", GAIALast, variant="z")
add("gaia", GAIA, variant="a")
add("gaia_z", GAIA, variant="z")
