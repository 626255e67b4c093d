"""Detectors that run the network on the images again: ODIN.

ODIN (Liang et al. 2018) scores the temperature-scaled maximum softmax S_T(x) = max_k softmax(f(x)/T)_k
of an input moved *in pixel space* by a step of size ε against the gradient of −log S_T:

    pixel̃ = pixel − ε · sign(−∇_pixel log S_T(x)).

The model sees the normalised input x = (pixel − mean)/std (per channel), and ∇_pixel = ∇ₓ / std
has the sign of ∇ₓ, so in the model's input space the step is

    x̃ = x − ε · sign(−∇ₓ log S_T(x)) / std,

exactly what the authors' code does (it divides the gradient's sign by the normalisation std), so
that ε is measured in units of the [0, 1] pixel range. ``epsilon=0`` is the control:
temperature-scaled MSP. To first order the step raises log S_T by ε‖∇_pixel log S_T‖₁, which
:func:`ood_lib.findings.depth.odin_first_order` measures (chapter *Gradient scores and their closed forms*,
section on depth). Where the gradient is exactly 0, ``sign`` is 0 and that pixel stays put.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .._checks import OODInputError, check_temperature
from ..gradients.signals import channel_std
from .base import Detector, Needs, register


def log_msp_and_input_gradient(model: torch.nn.Module, x: torch.Tensor, temperature: float
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log S_T(x), ∇ₓ log S_T(x))`` per image, batched (in eval mode each image's gradient is its
    own). log S_T is formed in float64 from the logits, so that the small differences a large T
    leaves between images are not lost to rounding; the gradient has x's dtype."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        log_s = F.log_softmax(model(x).double() / temperature, dim=1).max(dim=1).values
        (g,) = torch.autograd.grad(log_s.sum(), x)
    return log_s.detach(), g


def odin_perturb(x: torch.Tensor, grad_log_s: torch.Tensor, epsilon: float, std: torch.Tensor) -> torch.Tensor:
    """x̃ = x − ε · sign(−∇ₓ log S_T) / std: ODIN's pixel-space step, in the model's input space."""
    return x - epsilon * torch.sign(-grad_log_s) / std


def _check_epsilon(epsilon: Any) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon < 0:
        raise OODInputError(f"epsilon must be a finite number >= 0 (pixel units, 0 = no perturbation), got {epsilon!r}")
    return float(epsilon)


@register("odin")
class ODIN(Detector):
    """ODIN: S_T of the input moved by ε in pixel space (module docstring). Batched.

    ``input_std``: the per-channel std of the model's input normalisation (one number for all
    channels; None = 1, i.e. the model takes unnormalised [0, 1] pixels). ``epsilon=0``: MSP at
    temperature T, with no backward pass.
    """

    needs = Needs(model=True, inputs=True)

    def __init__(self, model: torch.nn.Module, temperature: float = 1000.0, epsilon: float = 0.0014,
                 input_std: float | Sequence[float] | None = None) -> None:
        self.model, self.temperature, self.epsilon = model, temperature, epsilon
        self.input_std = None if input_std is None else (
            float(input_std) if isinstance(input_std, (int, float)) else tuple(float(s) for s in input_std))

    def score_inputs(self, loader: Any, device: torch.device | str = "cpu") -> torch.Tensor:
        T, eps = check_temperature(self.temperature), _check_epsilon(self.epsilon)
        model = self.model.to(device).eval()
        out = []
        for x, _y, ok in loader:
            x = x[ok].to(device)
            if len(x) == 0:
                continue
            if eps > 0:
                _, g = log_msp_and_input_gradient(model, x, T)
                x = odin_perturb(x, g, eps, channel_std(self.input_std, x.shape[1], x))
            with torch.no_grad():
                p = F.softmax(model(x).double() / T, dim=1)
            out.append(p.max(dim=1).values.cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


def odin_scores(model: torch.nn.Module, loader: Any, *, temperature: float = 1000.0, epsilon: float = 0.0014,
                input_std: float | Sequence[float] | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """ODIN scores of every readable image of ``loader`` (see :class:`ODIN`)."""
    return ODIN(model, temperature, epsilon, input_std).score_inputs(loader, device)
