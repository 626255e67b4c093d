"""The papers' own settings that a detector's default follows from the model it is given.

Where a paper publishes one value per setting, the default follows the number of classes C of the
head (:func:`paper_setting`: the CIFAR value for C ≤ 100, the ImageNet-1k value above).
Hyper-parameters are the papers' own, never tuned here.
"""

from __future__ import annotations

from .._checks import OODInputError

KNN_SETTINGS = {"cifar": (50_000, 50), "imagenet": (1_281_167, 1000)}


def paper_setting(n_classes: int) -> str:
    """The published setting closest in log C to ``n_classes`` (10 or 1000): "cifar" for C ≤ 100, else "imagenet"."""
    if int(n_classes) < 2:
        raise OODInputError(f"n_classes must be at least 2, got {n_classes}")
    return "cifar" if n_classes <= 100 else "imagenet"


def knn_k_for_bank(n_bank: int, n_classes: int) -> int:
    """k of the KNN detector for a bank of ``n_bank`` ID training features (Sun et al., ICML 2022).

    The paper's rule: k grows in proportion to the bank, k/N fixed (its ImageNet runs use k = 1000
    with the full bank and k = 10 with a 1 % sample). The ratio is the one of the published setting
    closest in classes (:func:`paper_setting`): 50 / 50,000 (CIFAR-10) or 1000 / 1,281,167
    (ImageNet-1k); the two differ by 28 %. k = round(N · ratio), at least 1 and at most N.
    """
    if int(n_bank) < 1:
        raise OODInputError(f"n_bank must be at least 1, got {n_bank}")
    n_ref, k_ref = KNN_SETTINGS[paper_setting(n_classes)]
    return int(min(n_bank, max(1, round(n_bank * k_ref / n_ref))))


def vim_principal_dim(d: int) -> int:
    """ViM's principal dimension for D-dimensional features (Wang et al., CVPR 2022, implementation details):
    1000 if D ≥ 1500, 512 if D = 768, D/2 otherwise."""
    return 1000 if d >= 1500 else 512 if d == 768 else d // 2
