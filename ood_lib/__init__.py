"""ood_lib — gradient-based OOD scores, their closed forms U(h)·V(p), and the benchmarks.

Importing the package does nothing beyond defining names: no seeding, no downloads, no styling.

Each top-level entry is one layer; a module imports only from its own layer or those below it
(``tests/test_layers.py`` fails on the first import that climbs)::

    cli          python -m ood_lib verify | evaluate | study | extract
    book/        glue, display tables, figures, reports over several studies
    findings/    claims, decision rules, mechanism, the study of one benchmark, depth, ROC, labels
    run/         RunConfig, feature extraction (and torchrun), the runner, results, cost, machine
    detectors/   every detector behind one protocol, by family: posthoc, distance, shaping, ...
    data/        files and folders, transforms, embedded data, sources, benchmarks
    gradients/   autograd scores, per-layer signals and norms, reductions, GAIA, verify, rank
    models/      architectures, checkpoints, training, anatomy (head, last block, last BN)
    stats/       metrics (AUROC, FPR95, AUPR), the paired bootstrap
    scores/      U and V terms, the gradient-score registry, closed forms, fused scoring
    cache        atomic, self-checking cache entries
    _checks      input validation and the errors every layer raises; _version

The public API is the names below (``score``, ``SCORES``, ``auroc``, …, and ``study``: the whole
study on your own model and data in one call), ``ood_lib.detectors.create`` and the modules the
book's appendix names.
"""

from ._checks import OODInputError
from .stats.metrics import aupr_in, aupr_out, auroc, bootstrap_ci, evaluate_scores, fpr95
from .scores.closed_forms import ALIASES, GRADIENT_FORMS, SCORES, U_TERMS, V_TERMS, canonical, closed_form, score

from ._version import __version__


def study(model, id, ood, fit=None, **kwargs):
    """Is GradNorm worth it on ``model``? The study on your own model and data, in one call:
    :func:`ood_lib.book.own.study` (loaded on the first call, so that importing ood_lib stays cheap).

    >>> result = ood_lib.study(model, id="val/", ood={"textures": "dtd/", "ninco": ("ninco/", "near")},
    ...                        fit="train/")                              # doctest: +SKIP
    >>> result.answer(); result.to_html("report.html")                    # doctest: +SKIP
    """
    from .book.own import study as _study

    return _study(model, id, ood, fit, **kwargs)


__all__ = [
    "ALIASES",
    "OODInputError",
    "GRADIENT_FORMS",
    "SCORES",
    "U_TERMS",
    "V_TERMS",
    "aupr_in",
    "aupr_out",
    "auroc",
    "bootstrap_ci",
    "canonical",
    "closed_form",
    "evaluate_scores",
    "fpr95",
    "score",
    "study",
]
