"""Every OOD detector behind one protocol (:mod:`.base`), and the registry of them by name.

Modules, in the order their detectors appear in result tables:

* :mod:`.posthoc` — pure functions of (h, logits): MSP, MaxLogit, Energy, the U·V grid, the
  closed forms of the gradient scores;
* :mod:`.autograd` — the gradient scores by autograd, w.r.t. the head, from cached features;
* :mod:`.fitted` — fitted on the ID training split: Mahalanobis, ReAct, KNN;
* :mod:`.model_access` — run the network on the images again: ODIN.

``create(name, model=...)`` builds a registered detector; ``canonical(name)`` names the detector
an alias repeats (:data:`ALIASES`).
"""

from __future__ import annotations

from . import posthoc  # noqa: F401  (registration order: the order of result tables)
from . import autograd  # noqa: F401
from . import fitted  # noqa: F401
from . import model_access  # noqa: F401
from . import modern  # noqa: F401
from . import gradient_family  # noqa: F401
from .autograd import AutogradGradient, autograd_name
from .base import DETECTORS, Detector, Entry, FitData, FittedDetector, Needs, add, canonical, create, register
from .fitted import KNN, Mahalanobis, ReAct
from .model_access import ODIN, odin_scores
from .posthoc import UV, ClosedFormScore, Energy, GradientClosedForm, MaxLogit, MSP

ALIASES: dict[str, Entry] = {n: e for n, e in DETECTORS.items() if e.alias_of is not None}

__all__ = [
    "ALIASES", "DETECTORS", "KNN", "MSP", "ODIN", "UV", "AutogradGradient", "ClosedFormScore", "Detector",
    "Energy", "Entry", "FitData", "FittedDetector", "GradientClosedForm", "Mahalanobis", "MaxLogit", "Needs",
    "ReAct", "add", "autograd_name", "canonical", "create", "odin_scores", "register",
]
