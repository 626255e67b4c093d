"""Published numbers the book compares against (facts cited from the papers, not re-derived).

GRADNORM_IMAGENET: Huang, Geng & Li (2021), *On the importance of gradients for detecting
distributional shifts in the wild*, Table 1 — ImageNet-1k, BiT-S-R101x1; FPR95 and AUROC, percent.

OPENOOD_CIFAR10: Zhang et al. (2023), *OpenOOD v1.5*, CIFAR-10 leaderboard with a ResNet-18
(ID accuracy 95.06 %): AUROC in percent, near (CIFAR-100, Tiny-ImageNet) and far (MNIST, SVHN,
Textures, Places365).

OPENOOD_IMAGENET: the same paper's ImageNet-1k leaderboard, AUROC in percent, near (SSB-hard,
NINCO) and far (iNaturalist, Textures, OpenImage-O): a ResNet-50 for MSP, Energy, ReAct, KNN and
GradNorm, and a ViT-B/16 for GradNorm (the rows the study's notes give; no number is added here
that was not checked against the paper).
"""

from __future__ import annotations

import pandas as pd

_ROWS = {
    #              iNaturalist      SUN             Places          Textures
    "msp":         [(63.69, 87.59), (79.98, 78.34), (81.44, 76.76), (82.73, 74.45)],
    "odin":        [(62.69, 89.36), (71.67, 83.92), (76.27, 80.67), (81.31, 76.30)],
    "energy":      [(64.91, 88.48), (65.33, 85.32), (73.02, 81.37), (80.87, 75.79)],
    "mahalanobis": [(96.34, 46.33), (88.43, 65.20), (89.75, 64.46), (52.23, 72.10)],
    "gradnorm":    [(50.03, 90.33), (46.48, 89.03), (60.86, 84.82), (61.42, 81.07)],
}
_SETS = ["inaturalist", "sun", "places", "textures"]


def gradnorm_imagenet_table() -> pd.DataFrame:
    """Long table: method, ood, fpr95, auroc (mean rows included), as published."""
    rows = []
    for method, vals in _ROWS.items():
        for ood, (fpr, auc) in zip(_SETS, vals):
            rows.append({"method": method, "ood": ood, "fpr95": fpr, "auroc": auc})
    df = pd.DataFrame(rows)
    mean = df.groupby("method", sort=False)[["fpr95", "auroc"]].mean().reset_index().assign(ood="mean")
    return pd.concat([df, mean], ignore_index=True)


_OPENOOD_CIFAR10 = {  # method: (near AUROC, far AUROC)
    "msp": (88.03, 90.73), "energy": (87.58, 91.21), "react": (87.11, 90.42), "knn": (90.64, 92.96),
    "vim": (88.68, 93.48), "ash": (75.27, 78.49), "scale": (82.55, 86.39), "fdbd": (90.42, 93.16),
    "gradnorm": (54.90, 57.55),
}


def openood_cifar10_table() -> pd.DataFrame:
    """OpenOOD v1.5's CIFAR-10 AUROC (percent), one row per method, columns ``OpenOOD near`` and ``OpenOOD far``."""
    return pd.DataFrame.from_dict(_OPENOOD_CIFAR10, orient="index", columns=["OpenOOD near", "OpenOOD far"])


_OPENOOD_IMAGENET = {  # (model, method): (near AUROC, far AUROC)
    ("ResNet-50", "msp"): (76.02, 85.23), ("ResNet-50", "energy"): (75.89, 89.47),
    ("ResNet-50", "react"): (77.38, 93.67), ("ResNet-50", "knn"): (71.10, 90.18),
    ("ResNet-50", "gradnorm"): (72.96, 90.25), ("ViT-B/16", "gradnorm"): (39.28, 41.75),
}
GRADNORM_SOURCE = "Huang, Geng & Li (2021), Table 1"
OPENOOD_SOURCE = "Zhang et al. (2023), OpenOOD v1.5 leaderboard"


def imagenet_anchors() -> pd.DataFrame:
    """The published ImageNet-1k numbers the new ImageNet evidence is put beside, one row per
    (source, model, setting, method): columns ``source``, ``model``, ``setting`` (the OOD set, or
    ``near`` / ``far`` / ``mean`` over the sets), ``group`` (near or far, as OpenOOD v1.5 groups
    ImageNet's sets; GradNorm's four sets are all far), ``method``, ``auroc`` and ``fpr95``
    (percent; NaN where the source gives none), and ``gradnorm_minus_msp``: GradNorm's AUROC minus
    MSP's in the same source, model and setting (NaN where the source has no MSP row), whose sign
    is the direction the new numbers are compared on."""
    g = gradnorm_imagenet_table().assign(source=GRADNORM_SOURCE, model="BiT-S-R101x1", group="far")
    g = g.rename(columns={"ood": "setting"})
    o = pd.DataFrame([{"source": OPENOOD_SOURCE, "model": model, "setting": grp, "group": grp, "method": method,
                       "auroc": auc, "fpr95": float("nan")}
                      for (model, method), aucs in _OPENOOD_IMAGENET.items() for grp, auc in zip(("near", "far"), aucs)])
    t = pd.concat([g, o], ignore_index=True)[["source", "model", "setting", "group", "method", "auroc", "fpr95"]]
    key = ["source", "model", "setting"]
    msp = t[t.method == "msp"].set_index(key).auroc
    gn = t[t.method == "gradnorm"].set_index(key).auroc
    diff = (gn - msp).rename("gradnorm_minus_msp")
    return t.merge(diff.reset_index(), on=key, how="left")
