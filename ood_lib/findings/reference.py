"""Published numbers the book compares against (facts cited from the papers, not re-derived).

GRADNORM_IMAGENET: Huang, Geng & Li (2021), *On the importance of gradients for detecting
distributional shifts in the wild*, Table 1 — ImageNet-1k, BiT-S-R101x1; FPR95 and AUROC, percent.

OPENOOD_CIFAR10: Zhang et al. (2023), *OpenOOD v1.5*, CIFAR-10 leaderboard with a ResNet-18
(ID accuracy 95.06 %): AUROC in percent, near (CIFAR-100, Tiny-ImageNet) and far (MNIST, SVHN,
Textures, Places365).
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
