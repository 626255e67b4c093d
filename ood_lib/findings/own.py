"""The study on your own model and data (chapter *Your model*): the pre-registered verdicts of one
model × data, the mechanism's prediction per OOD set, and GradNorm by autograd through the whole
network on a sample of images, held against its closed form.

:func:`own_study` runs :func:`ood_lib.findings.study.run_study` on an
:class:`~ood_lib.data.own.OwnBenchmark` — the same extraction (cached), detectors, paired bootstrap
and December verdicts as a registered benchmark — and adds two tables:

* ``mechanism`` — per OOD set, AUROC of ‖h‖₁ alone and the prediction of
  :func:`ood_lib.findings.mechanism.predict_feature_norm_effect` (‖h‖₁ helps MSP and GradNorm's
  output term when that AUROC exceeds τ), beside the differences observed;
* ``identity`` — per set, the largest difference between GradNorm by autograd (one image at a
  time, backward through the network, as published) and ‖h‖₁‖p − u‖₁, in units of the V term.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._checks import OODInputError
from ..data.files import stack_images
from ..data.own import OwnBenchmark
from ..gradients.autograd import gradient_score
from ..run.config import RunConfig
from ..detectors import DETECTORS
from ..run.evaluate import ON_REQUEST, prepare
from ..scores.closed_forms import closed_form
from ..scores.registry import GRADIENT_SCORES
from ..scores.terms import u_term
from ..stats.metrics import auroc
from .claims import IDENTITY_TOL, N_BOOT, identity_verdict
from .mechanism import TAU, predict_feature_norm_effect
from .study import Study, TABLES, run_study

__all__ = ["IDENTITY_IMAGES", "OWN_TABLES", "identity_table", "mechanism_table", "own_methods", "own_study"]

IDENTITY_IMAGES = 8  # images per set that GradNorm is differentiated on, one at a time
OWN_TABLES = (*TABLES, "mechanism", "identity")


def own_methods() -> list[str]:
    """Every method that reads the cached features: each closed form, the output and feature
    baselines, the fitted detectors (those the fitting set allows) — not ODIN and GAIA, which
    run the network again on every image (ask for them in ``methods``)."""
    return [n for n, e in DETECTORS.items() if not e.cls.needs.inputs and n not in ON_REQUEST]


def mechanism_table(prep, scores: dict[str, dict[str, np.ndarray]], tau: float = TAU) -> pd.DataFrame:
    """Per OOD set: AUROC(‖h‖₁), whether the feature norm is predicted to help, and what it did
    (AUROC differences in points: ‖h‖₁·MSP − MSP, GradNorm − ‖p − u‖₁)."""
    h_id = torch.from_numpy(prep.feats["id_test"].h).double()
    rows = []
    for k in prep.ood_keys:
        pred = predict_feature_norm_effect(h_id, torch.from_numpy(prep.feats[k].h).double(), tau)
        diff = {}
        for col, (a, b) in {"msp_gain": ("l1*msp", "msp"), "gradnorm_gain": ("gradnorm", "one*pu_l1")}.items():
            d = (auroc(scores[a]["id_test"], scores[a][k]) - auroc(scores[b]["id_test"], scores[b][k])
                 if a in scores and b in scores else np.nan)
            diff[col] = float(np.round(d, 9))  # a tie stays a tie, not ±1e-15
        rows.append({"ood": k, "group": prep.splits[k].group, **pred, **diff,
                     "agrees": bool((diff["msp_gain"] > 0) == pred["helps"]) if np.isfinite(diff["msp_gain"]) else None})
    return pd.DataFrame(rows)


def identity_table(prep, n: int = IDENTITY_IMAGES, seed: int = 0, temperature: float = 1.0) -> pd.DataFrame:
    """GradNorm by autograd through the whole network (float64, one image at a time) against its
    closed form, on ``n`` images of the ID set and of each OOD set: the worst difference in units
    of the V term (:data:`ood_lib.findings.claims.IDENTITY_TOL`) and the verdict."""
    g = GRADIENT_SCORES["gradnorm"]
    model = copy.deepcopy(prep.model).double().eval().to(prep.device)
    rows = []
    for k in ["id_test", *prep.ood_keys]:
        x, _ = stack_images(prep.splits[k].dataset, n, seed)
        x = x.double().to(prep.device)
        with torch.no_grad():
            h, f = model.forward_features(x)
        a = gradient_score("gradnorm", model, x, temperature=temperature, method="loop").detach()
        c = closed_form("gradnorm", h, f, temperature)
        scale = g.factor(f.shape[1], temperature) * u_term(g.u, h)
        worst = float(((a - c).abs() / scale).max().cpu())
        rows.append({"set": k, "n": len(x), "v_diff": worst, "tolerance": IDENTITY_TOL, "verdict": identity_verdict(worst),
                     "how": "autograd, batch 1, backward through the network, float64"})
    return pd.DataFrame(rows)


def own_study(bench: OwnBenchmark, config: RunConfig | None = None, *, n_boot: int = N_BOOT,
              identity_images: int = IDENTITY_IMAGES, **overrides: Any) -> Study:
    """The study of :func:`ood_lib.findings.study.run_study` on your model and data, with the tables
    ``mechanism`` and ``identity`` (module docstring). ``overrides`` are :class:`RunConfig` fields
    (default methods: :func:`own_methods`)."""
    if not isinstance(bench, OwnBenchmark):
        raise OODInputError("own_study takes the benchmark of ood_lib.data.own.own_benchmark")
    cfg = (config or RunConfig()).replace(**overrides)
    if cfg.methods is None:
        cfg = cfg.replace(methods=tuple(own_methods()))
    study = run_study(bench, cfg, n_boot=n_boot)
    prep = prepare(bench, cfg, with_train=False)  # the features again, from the cache
    study.tables["mechanism"] = mechanism_table(prep, study.scores)
    if identity_images:
        study.tables["identity"] = identity_table(prep, identity_images, cfg.seed)
    study.meta.update(tables=[t for t in OWN_TABLES if t in study.tables], model=bench.model.arch,
                      preprocessing={"resize": bench.preprocessing.resize, "crop": bench.preprocessing.crop,
                                     "mean": list(bench.preprocessing.mean), "std": list(bench.preprocessing.std),
                                     "mode": bench.preprocessing.mode, "from": bench.preprocessing_source},
                      marks={o.key: o.decision_group for o in bench.ood})
    return study
