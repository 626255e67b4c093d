"""Every OOD detector behind one protocol (:mod:`.base`), and the registry of them by name.

Modules, by method family (result tables list them in :data:`TABLE_ORDER`):

* :mod:`.posthoc` — pure functions of (h, logits): MSP, MaxLogit, Energy, the U·V grid, the
  closed forms of the gradient scores, GEN;
* :mod:`.autograd` — the gradient scores by autograd, w.r.t. the head, from cached features;
* :mod:`.distance` — the geometry of the ID training features: Mahalanobis, KNN, ViM, fDBD, NNGuide;
* :mod:`.shaping` — h reshaped before the head: ReAct, ASH, SCALE, DICE;
* :mod:`.model_access` — run the network on the images again: ODIN;
* :mod:`.gradient_family` — the newer gradient detectors and GAIA;
* :mod:`.settings` — the papers' settings that defaults follow (KNN's k, ViM's dimension);
* :mod:`.regime` — shaping settings chosen on the ID training features (``percentile="id"``).

``create(name, model=...)`` builds a registered detector; ``canonical(name)`` names the detector
an alias repeats (:data:`ALIASES`).
"""

from __future__ import annotations

from . import posthoc  # noqa: F401  (registration order: the order of result tables)
from . import autograd  # noqa: F401
from . import distance  # noqa: F401
from . import shaping  # noqa: F401
from . import model_access  # noqa: F401
from . import gradient_family  # noqa: F401
from .autograd import AutogradGradient, autograd_name
from .base import DETECTORS, Detector, Entry, FitData, FittedDetector, Needs, add, canonical, create, register
from .distance import KNN, Mahalanobis
from .model_access import ODIN, odin_scores
from .shaping import IN_REGIME, ReAct
from .regime import Regime, choose_in_regime
from .posthoc import UV, ClosedFormScore, Energy, GradientClosedForm, MaxLogit, MSP

# Result tables keep the order they were first recorded in: the closed forms and their autograd
# twins, the baselines of the GradNorm paper's time (Mahalanobis, ReAct, KNN, ODIN), the baselines
# published after it, then the newer gradient detectors (registration runs by family, above).
TABLE_ORDER = ("mahalanobis", "react", "knn", "odin", "vim", "ash", "scale", "dice", "gen", "fdbd", "nnguide")
_first = [n for n, e in DETECTORS.items() if n not in TABLE_ORDER and e.cls.__module__.endswith((".posthoc", ".autograd"))]
_rest = [n for n in DETECTORS if n not in TABLE_ORDER and n not in _first]
_entries = dict(DETECTORS)
DETECTORS.clear()
DETECTORS.update({n: _entries[n] for n in (*_first, *TABLE_ORDER, *_rest)})

ALIASES: dict[str, Entry] = {n: e for n, e in DETECTORS.items() if e.alias_of is not None}

__all__ = [
    "ALIASES", "DETECTORS", "IN_REGIME", "KNN", "MSP", "ODIN", "UV", "AutogradGradient", "ClosedFormScore", "Detector",
    "Energy", "Entry", "FitData", "FittedDetector", "GradientClosedForm", "Mahalanobis", "MaxLogit", "Needs",
    "ReAct", "Regime", "add", "autograd_name", "canonical", "choose_in_regime", "create", "odin_scores", "register",
]
