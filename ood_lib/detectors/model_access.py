"""Detectors that run the network on the images again: ODIN."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import Detector, Needs, register


@register("odin")
class ODIN(Detector):
    """ODIN (Liang et al. 2018): MSP at temperature T of the input moved by ε·sign(∇ₓ log max p_T).

    The perturbation is applied in the model's (normalised) input space. Batched: in eval mode
    each sample's input gradient depends on that sample only.
    """

    needs = Needs(model=True, inputs=True)

    def __init__(self, model: torch.nn.Module, temperature: float = 1000.0, epsilon: float = 0.0014) -> None:
        self.model, self.temperature, self.epsilon = model, temperature, epsilon

    def score_inputs(self, loader: Any, device: torch.device | str = "cpu") -> torch.Tensor:
        model = self.model.to(device).eval()
        out = []
        for x, _y, ok in loader:
            x = x[ok].to(device).requires_grad_(True)
            if len(x) == 0:
                continue
            logp = F.log_softmax(model(x) / self.temperature, dim=1)
            (g,) = torch.autograd.grad(logp.max(dim=1).values.sum(), x)
            with torch.no_grad():
                p = F.softmax(model(x + self.epsilon * g.sign()) / self.temperature, dim=1)
            out.append(p.max(dim=1).values.double().cpu())
        return torch.cat(out)


def odin_scores(model: torch.nn.Module, loader: Any, *, temperature: float = 1000.0, epsilon: float = 0.0014,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """ODIN scores of every readable image of ``loader`` (see :class:`ODIN`)."""
    return ODIN(model, temperature, epsilon).score_inputs(loader, device)
