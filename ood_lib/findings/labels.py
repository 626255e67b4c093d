"""Display names: what a reader sees in place of a method, OOD set or group id, in every table and figure.

* Methods (:func:`method_label`): the baselines and gradient scores by their published names
  ("MSP", "GradNorm"); ``<name>_autograd`` and ``<name>_flipped`` add "(autograd)", "(flipped)";
  a U·V grid member ``"u*v"`` is the product of its terms' formulas (``"l1*msp"`` →
  "‖h‖₁ · max p"), from :data:`ood_lib.scores.terms.U_TERMS` / :data:`~ood_lib.scores.terms.V_TERMS` — the
  chapter *Feature norm × output distribution* derives them.
* OOD sets (:func:`set_label`): each benchmark's own :attr:`OODSet.name <ood_lib.data.benchmarks.OODSet>`.
* Groups (:func:`group_label`): near, far, covariate, and the summary rows.

An unknown id is shown as it is: a new method appears in a table under its id, never as an error.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

import pandas as pd

from ..data.benchmarks import BENCHMARKS, get_benchmark
from ..scores.registry import GRADIENT_SCORES
from ..scores.terms import U_TERMS, V_TERMS

__all__ = ["BENCHMARK_NAMES", "GROUP_LABELS", "METHOD_LABELS", "MODEL_NAMES", "group_label", "method_label",
           "model_name", "relabel", "set_label", "short_pair", "term_label"]

METHOD_LABELS: dict[str, str] = {
    # the output and feature baselines
    "msp": "MSP",
    "maxlogit": "Max logit",
    "energy": "Energy",
    "odin": "ODIN",
    "mahalanobis": "Mahalanobis",
    "react": "ReAct",
    "knn": "KNN",
    # baselines published after GradNorm (ood_lib.detectors.distance, .shaping, .posthoc)
    "vim": "ViM",
    "ash": "ASH",
    "scale": "SCALE",
    "dice": "DICE",
    "gen": "GEN",
    "fdbd": "fDBD",
    "nnguide": "NNGuide",
    "gradorth": "GradOrth",
    "kfac_natgrad": "K-FAC natural gradient",
    "gradunc_l2": "Gradient uncertainty ℓ₂",
    "gradunc_max": "Gradient uncertainty max",
    "gaia_last": "GAIA-A (last layer)",
    "gaia_z_last": "GAIA-Z (last layer)",
    "gaia": "GAIA-A",
    "gaia_z": "GAIA-Z",
    # the gradient scores (records in ood_lib.scores.registry)
    "gradnorm": "GradNorm",
    "gradnorm_official": "GradNorm (all-ones target)",
    "exgrad": "ExGrad",
    # ExGrad's authors score "larger expected gradient = OOD": the reversed reading is theirs
    "exgrad_flipped": "ExGrad (its authors' orientation)",
    "fisher": "Fisher trace",
    "unif_l1": "Uniform-label ℓ₁",
    "unif_l2sq": "Uniform-label ℓ₂²",
    "ce_pred": "Predicted-label CE",
    "mean_grad": "Mean gradient",
    # a claim's side that stands for the whole grid
    "uv_members": "best U·V member",
}

# the readings of a score that carry their own suffix, outermost first
SUFFIXES = {"_autograd": "autograd", "_flipped": "flipped"}

GROUP_LABELS: dict[str, str] = {
    "near": "near OOD",
    "far": "far OOD",
    "covariate": "covariate shift",
    "all": "all OOD sets",
    "id": "in-distribution",  # the ID split, where a figure shows it beside the OOD groups
}

# summary rows of a results table, and the ID split in the histograms
SPECIAL_SETS: dict[str, str] = {
    "mean": "mean over OOD sets",
    "near": "near OOD (mean)",
    "far": "far OOD (mean)",
    "covariate": "covariate shift (mean)",
    "id_test": "ID test",
}

_INDEX = re.compile(r"_k\b")  # the summation index: "max_k p_k" reads "max p"


def term_label(formula_label: str) -> str:
    """A term's formula as a table shows it: the index ``_k`` dropped, ``‖h‖_∞`` as ``‖h‖∞``."""
    return _INDEX.sub("", formula_label).replace("_∞", "∞")


_BRACKETED = re.compile(r"‖[^‖]*‖|\([^()]*\)")


def _factor(label: str) -> str:
    """A factor of a product: a sum or difference (outside norms and brackets) goes in parentheses."""
    top = _BRACKETED.sub("x", label)
    return f"({label})" if " + " in top or " − " in top else label


def _member_label(u: str, v: str) -> str:
    ul, vl = term_label(U_TERMS[u].label), term_label(V_TERMS[v].label)
    if u == "one":
        return vl
    if v == "one":
        return ul
    return f"{_factor(ul)} · {_factor(vl)}"


def method_label(name: str) -> str:
    """The display name of method ``name`` (the name itself when unknown)."""
    if name in METHOD_LABELS:
        return METHOD_LABELS[name]
    for suffix, reading in SUFFIXES.items():
        base = name[: -len(suffix)]
        if name.endswith(suffix) and (base in METHOD_LABELS or base in GRADIENT_SCORES):
            label = method_label(base)
            return f"{label[:-1]}, {reading})" if label.endswith(")") else f"{label} ({reading})"
    u, star, v = name.partition("*")
    if star and u in U_TERMS and v in V_TERMS:
        return _member_label(u, v)
    return name


def _set_names() -> dict[str, Counter]:
    names: dict[str, Counter] = {}
    for b in BENCHMARKS.values():
        for o in b.ood:
            names.setdefault(o.key, Counter())[o.name] += 1
    return names


def set_label(key: str, benchmark: str | None = None) -> str:
    """The display name of OOD set ``key``: the benchmark's own name for it; without a benchmark,
    the name most benchmarks give it (ties: the first declared). Summary rows ("mean", "near",
    "far") and "id_test" have their own; an unknown key is shown as it is."""
    if benchmark is not None and benchmark in BENCHMARKS:
        for o in BENCHMARKS[benchmark].ood:
            if o.key == key:
                return o.name
    if key in SPECIAL_SETS:
        return SPECIAL_SETS[key]
    names = _set_names().get(key)
    return names.most_common(1)[0][0] if names else key


def group_label(group: str) -> str:
    """The display name of an OOD group ("near" → "near OOD"); unknown groups are shown as they are."""
    return GROUP_LABELS.get(group, group)


def relabel(df: pd.DataFrame, benchmark: str | None = None,
            columns: Iterable[str] = ("method", "ood", "group", "member")) -> pd.DataFrame:
    """A copy of a results table with the id columns among ``columns`` replaced by display names
    (``method`` and ``member``: :func:`method_label`; ``ood``: :func:`set_label`; ``group``:
    :func:`group_label`)."""
    fn = {"method": method_label, "member": method_label, "group": group_label,
          "ood": lambda k: set_label(k, benchmark)}
    out = df.copy()
    for col in columns:
        if col in out.columns and col in fn:
            out[col] = out[col].map(lambda x, f=fn[col]: f(x) if isinstance(x, str) else x)
    return out


MODEL_NAMES = {"mnist_cnn": "small CNN", "resnet20": "ResNet-20", "densenet_bc100": "DenseNet-BC-100",
               "efficientnet_lite0": "EfficientNet-Lite0", "efficientnet_lite1": "EfficientNet-Lite1",
               "efficientnet_lite2": "EfficientNet-Lite2", "vit_tiny_patch16_224": "ViT-Ti/16",
               "resnet50": "ResNet-50", "bit_r101x1": "BiT-S-R101x1"}
BENCHMARK_NAMES = {"embedded": "embedded", "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar10_densenet": "CIFAR-10",
                   "imagenet_lite": "ImageNet val subset", "imagenet_lite1": "ImageNet val subset",
                   "imagenet_lite2": "ImageNet val subset", "imagenet_vit": "ImageNet val subset",
                   "imagenet": "ImageNet", "imagenet_bit": "ImageNet"}


def model_name(benchmark: str) -> str:
    """The display name of a benchmark's model (its architecture id where none is set)."""
    arch = get_benchmark(benchmark).model.arch
    return MODEL_NAMES.get(arch, arch)


def short_pair(benchmark: str) -> str:
    """A compact label of a benchmark × model pair, e.g. "CIFAR-10 · ResNet-20"."""
    return f"{BENCHMARK_NAMES.get(benchmark, benchmark)} · {model_name(benchmark)}"
