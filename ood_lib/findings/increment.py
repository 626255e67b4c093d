"""Depth as an incremental-information test (chapter *Below the head and at the input*).

"The gradient w.r.t. block b beats the best penultimate detector" mixes two questions: is deeper
better, and is a gradient better than a forward pass? This module separates them. Per block b
(from the input side; the head is not a block below the head and is left out, with or without
its bias):

* **same block** — GradNorm's gradient norm w.r.t. b's parameters against b's own forward
  statistics (:func:`block_forward_scores`): the ℓ1 norm of b's output activation and the
  Mahalanobis score of its pooled activation (Lee et al., NeurIPS 2018: class means and one
  shared covariance fitted on ID *training* images only), the better of the two chosen on the
  evaluated data (which favours the forward side);
* **fusion** — z(best forward score) + z(gradient norm of b) against the best forward score alone,
  each z-score's mean and spread fitted on a seeded half of the ID test images (ID data only) and
  every AUROC taken on the other half against all OOD images, so no number is fitted on what it
  is scored on. A gradient that adds information raises the fused AUROC.

ODIN's input gradient is the positive control (Liang et al., ICLR 2018): ODIN's score after its
gradient step against S_T at ε = 0, the one published use of a gradient known to add to a
forward score on CIFAR-10. All comparisons of a target (an OOD set
or a group) share one max-statistic family (:meth:`ood_lib.stats.paired.PairedBootstrap.pairs_family`),
so every interval is simultaneous over blocks, both questions and the control.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._checks import OODInputError
from ..detectors.base import head_of
from ..gradients.layers import INPUT
from ..run.evaluate import Prepared
from ..run.features import batch_loader
from ..stats.metrics import auroc
from ..stats.paired import PairedBootstrap
from .claims import LEVEL, N_BOOT
from .depth import finish_panels, layer_blocks
from .paired_tables import targets

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["INCREMENT_COLUMNS", "MAX_FIT", "block_forward_scores", "head_blocks", "increment_figure",
           "increment_summary", "increment_table", "mahalanobis_fit", "mahalanobis_score"]

NETWORK, CONTROL = "network", "odin_input"
MAX_FIT = 10_000  # ID training images (seeded subsample) the Mahalanobis fits use at most
INCREMENT_COLUMNS = ["layer", "kind", "depth", "ood", "group", "auroc_grad", "same_block", "auroc_same",
                     "auroc_l1", "auroc_maha", "diff_same", "lo_same", "hi_same", "verdict_same",
                     "auroc_forward", "auroc_fused", "diff_fused", "lo_fused", "hi_fused", "verdict_fused"]


def head_blocks(model: nn.Module, blocks: Mapping[str, Sequence[str]]) -> list[str]:
    """The blocks whose parameters all belong to the model's head (its last ``nn.Linear``)."""
    head = head_of(model)
    names = {id(p): n for n, p in model.named_parameters()}
    own = {names[id(p)] for p in head.parameters()}
    return [b for b, ps in blocks.items() if ps and set(ps) <= own]


def _pool(a: torch.Tensor) -> torch.Tensor:
    """Channel means: (N, C, H, W) → (N, C); tokens (N, L, D) → (N, D); (N, D) as is."""
    a = a.double()
    return a.mean(dim=(2, 3)) if a.dim() == 4 else a.mean(dim=1) if a.dim() == 3 else a.flatten(1)


def _forward_stats(prep: Prepared, modules: Mapping[str, nn.Module], key: str, n: int | None = None,
                   seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """ℓ1 norms and pooled activations of each module's output (``INPUT``: the image) on split ``key``,
    at most ``n`` images (seeded subsample), and the labels."""
    ds = prep.splits[key].dataset
    if n is not None and len(ds) > n:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
        ds = torch.utils.data.Subset(ds, idx.tolist())
    got: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, b=b: got.__setitem__(b, out if torch.is_tensor(out) else out[0]))
             for b, m in modules.items() if b != INPUT]
    l1: dict[str, list] = {b: [] for b in modules}
    pooled: dict[str, list] = {b: [] for b in modules}
    labels = []
    model = prep.model.to(prep.device).eval()
    try:
        with torch.no_grad():
            for x, y, ok in batch_loader(ds, prep.batch_size, device_type=prep.device.type):
                x = x[ok].to(prep.device)
                if len(x) == 0:
                    continue
                got.clear()
                model(x)
                got[INPUT] = x
                for b in modules:
                    a = got[b]
                    l1[b].append(a.double().flatten(1).abs().sum(1).cpu())
                    pooled[b].append(_pool(a).cpu())
                labels.append(torch.as_tensor(y)[ok.cpu()])
    finally:
        for h in hooks:
            h.remove()
    return ({b: torch.cat(v).numpy() for b, v in l1.items()}, {b: torch.cat(v).numpy() for b, v in pooled.items()},
            torch.cat(labels).numpy())


def mahalanobis_fit(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means (C, D) and the pseudo-inverse of the shared within-class covariance (D, D) of ``z``."""
    z, labels = np.asarray(z, dtype=np.float64), np.asarray(labels)
    if z.ndim != 2 or len(z) != len(labels) or not np.isfinite(z).all():
        raise OODInputError(f"mahalanobis_fit needs finite (N, D) features with N labels, got {z.shape} and {labels.shape}")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise OODInputError("mahalanobis_fit needs ID training images of at least two classes")
    means = np.stack([z[labels == c].mean(0) for c in classes])
    centred = z - means[np.searchsorted(classes, labels)]
    return means, np.linalg.pinv(centred.T @ centred / len(z), hermitian=True)


def mahalanobis_score(z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """−min over classes of the squared Mahalanobis distance (higher = ID)."""
    z = np.asarray(z, dtype=np.float64)
    d = np.stack([np.einsum("nd,de,ne->n", z - m, precision, z - m) for m in means], axis=1)
    return -d.min(axis=1)


def block_forward_scores(prep: Prepared, blocks: Sequence[str], *, sets: Sequence[str] | None = None,
                         n_fit: int = MAX_FIT) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{block: {"l1": {set: scores}, "maha": {set: scores}}}`` (higher = ID) for ``INPUT`` (the
    image) and each block that is a module of the model: the ℓ1 norm of its output and the
    Mahalanobis score of its pooled output, fitted on at most ``n_fit`` ID training images."""
    if "id_train" not in prep.splits:
        raise OODInputError("block_forward_scores fits on the ID training images: prepare(..., with_train=True)")
    named = dict(prep.model.named_modules())
    modules = {b: named.get(b) for b in blocks if b == INPUT or b in named}
    _l1, fit, y = _forward_stats(prep, modules, "id_train", n_fit, prep.config.seed)
    params = {b: mahalanobis_fit(fit[b], y) for b in modules}
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {b: {"l1": {}, "maha": {}} for b in modules}
    for k in sets or ["id_test", *prep.ood_keys]:
        l1, pooled, _ = _forward_stats(prep, modules, k)
        for b in modules:
            out[b]["l1"][k] = l1[b]
            out[b]["maha"][k] = mahalanobis_score(pooled[b], *params[b])
    return out


def _z(s: Mapping[str, np.ndarray], cal: np.ndarray) -> dict[str, np.ndarray]:
    """``s`` standardised by the mean and spread of its calibration images ``s["id_test"][cal]``."""
    m, sd = float(np.mean(s["id_test"][cal])), float(np.std(s["id_test"][cal]))
    if not np.isfinite(sd) or sd == 0:
        raise OODInputError("a score is constant on the calibration half of the ID test images: it cannot be standardised")
    return {k: (np.asarray(v, dtype=np.float64) - m) / sd for k, v in s.items()}


def _halves(prep: Prepared, reference: Mapping[str, np.ndarray], gradients: Mapping[str, Mapping[str, np.ndarray]],
            forward: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The calibration and evaluation halves of the ID test images (seeded), after checking that
    every score covers the reference's images."""
    sets = ["id_test", *prep.ood_keys]
    for name, s in [("reference", reference), *gradients.items(), *((f"{b}.{t}", s) for b, f in forward.items()
                                                                    for t, s in f.items())]:
        bad = [k for k in sets if k not in s or len(s[k]) != len(reference[k])]
        if bad:
            raise OODInputError(f"{name} does not score the reference's images of {bad}")
    n_id = len(reference["id_test"])
    if n_id < 4:
        raise OODInputError(f"need at least 4 ID test images to split into calibration and evaluation, got {n_id}")
    perm = np.random.default_rng(seed).permutation(n_id)
    return np.sort(perm[: n_id // 2]), np.sort(perm[n_id // 2:])


def _rows(prep: Prepared, pb: PairedBootstrap, pairs: list, blocks: list[str], same: Mapping[str, str],
          control: bool, level: float) -> list[dict]:
    """The table's rows: per target, each block (and the control), the comparisons of its family."""
    order = {INPUT: 0, **{b: i for i, b in enumerate([x for x in blocks if x not in (INPUT, NETWORK)], 1)}}
    rows = []
    for ood, group, ks in targets(prep):
        fam = pb.pairs_family(pairs, sets=ks, level=level, direction=+1).set_index(["a", "b"])
        a = pb.auroc(ks)
        for b in [*blocks, *([CONTROL] if control else [])]:
            row = {"layer": b, "kind": "control" if b == CONTROL else b if b in (INPUT, NETWORK) else "block",
                   "depth": order.get(b, np.nan), "ood": ood, "group": group}
            if b == CONTROL:
                row.update(auroc_grad=np.nan, auroc_forward=float(a["odin_msp_t"]))
            else:
                row.update(auroc_grad=float(a[f"grad:{b}"]), auroc_forward=float(a["forward"]))
            f = fam.loc[(f"fused:{b}", "odin_msp_t" if b == CONTROL else "forward")]
            row.update(auroc_fused=float(a[f"fused:{b}"]), diff_fused=f.estimate, lo_fused=f.lo, hi_fused=f.hi,
                       verdict_fused=f.verdict)
            if b in same:
                g = fam.loc[(f"grad:{b}", f"{same[b]}:{b}")]
                row.update(same_block=same[b], auroc_same=float(a[f"{same[b]}:{b}"]),
                           auroc_l1=float(a[f"l1:{b}"]), auroc_maha=float(a[f"maha:{b}"]),
                           diff_same=g.estimate, lo_same=g.lo, hi_same=g.hi, verdict_same=g.verdict)
            rows.append(row)
    return rows


def increment_table(prep: Prepared, gradients: Mapping[str, Mapping[str, np.ndarray]],
                    forward: Mapping[str, Mapping[str, np.ndarray]], reference: Mapping[str, np.ndarray], *,
                    odin: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                    same_block: Mapping[str, str] | None = None, n_boot: int = N_BOOT,
                    seed: int | None = None, level: float = LEVEL) -> pd.DataFrame:
    """The incremental-information test per block and target (module docstring).

    ``gradients``: :func:`ood_lib.findings.depth.depth_scores` (``{score: {set: values}}``, larger = ID);
    ``forward``: :func:`block_forward_scores`; ``reference``: the best forward score ``{set: values}``;
    ``odin``: :func:`ood_lib.findings.depth.odin_terms` (``{set: {"log_s0", "log_s"}}``) for the
    positive control (its row: ``auroc_forward`` = S_T at ε = 0, ``auroc_fused`` = ODIN after its step).
    ``same_block``: ``{block: "l1" or "maha"}`` fixes the same-block forward score instead of choosing
    it (to recompute a recorded table on part of its sets). Head blocks (:func:`head_blocks`) are left out. Columns :data:`INCREMENT_COLUMNS`:
    AUROCs in percent on the evaluation half, ``diff_*`` in points with simultaneous intervals
    ``lo_*``/``hi_*`` and the verdict of each difference claimed > 0.
    """
    seed = prep.config.seed if seed is None else seed
    sets = ["id_test", *prep.ood_keys]
    cal, ev = _halves(prep, reference, gradients, forward, seed)
    heads = set(head_blocks(prep.model, layer_blocks(prep.model)))
    blocks = [b for b in gradients if b not in heads]
    table: dict[str, dict[str, np.ndarray]] = {"forward": dict(reference)}
    zref = _z(reference, cal)
    pairs: list[tuple[str, str]] = []
    for b in blocks:
        table[f"grad:{b}"] = dict(gradients[b])
        table[f"fused:{b}"] = {k: zref[k] + v for k, v in _z(gradients[b], cal).items()}
        pairs.append((f"fused:{b}", "forward"))
        if b in forward:
            for t in ("l1", "maha"):
                table[f"{t}:{b}"] = dict(forward[b][t])
    if odin is not None:  # ODIN's own use of the input gradient (its step) against S_T at ε = 0
        table["odin_msp_t"] = {k: odin[k]["log_s0"] for k in sets}
        table[f"fused:{CONTROL}"] = {k: odin[k]["log_s"] for k in sets}
        pairs.append((f"fused:{CONTROL}", "odin_msp_t"))
    # the same-block forward score: the better of l1 and Mahalanobis over the near and far sets
    keys = [k for k in prep.ood_keys if prep.splits[k].group != "covariate"] or prep.ood_keys
    same = {}
    for b in blocks:
        if b in forward and same_block is not None:
            if same_block.get(b) not in ("l1", "maha"):
                raise OODInputError(f"same_block[{b!r}] must be 'l1' or 'maha', got {same_block.get(b)!r}")
            same[b] = same_block[b]
            pairs.append((f"grad:{b}", f"{same[b]}:{b}"))
        elif b in forward:
            mean = {t: np.mean([auroc(table[f"{t}:{b}"]["id_test"][ev], table[f"{t}:{b}"][k]) for k in keys])
                    for t in ("l1", "maha")}
            same[b] = max(mean, key=mean.get)
            pairs.append((f"grad:{b}", f"{same[b]}:{b}"))
    pb = PairedBootstrap({n: s["id_test"][ev] for n, s in table.items()},
                         {k: {n: s[k] for n, s in table.items()} for k in prep.ood_keys}, n_boot=n_boot, seed=seed)
    rows = _rows(prep, pb, pairs, blocks, same, odin is not None, level)
    df = pd.DataFrame(rows, columns=INCREMENT_COLUMNS)
    df.attrs.update(n_boot=n_boot, level=level, benchmark=prep.name, n_calibration=len(cal), n_evaluation=len(ev))
    return df


def increment_summary(tables: Mapping[str, pd.DataFrame], groups: Sequence[str] = ("near", "far")) -> pd.DataFrame:
    """Per benchmark and group: how many layers' gradients beat / tie / lose to the same layer's
    forward statistics and, fused with the best forward score, add to / leave / lower it
    (verdicts of the simultaneous intervals), and the positive control's difference and verdict."""
    rows = []
    for name, t in tables.items():
        for g in groups:
            r = t[(t.ood == g) & (t.group == g)]
            if not len(r):
                continue
            layers, ctrl = r[r.kind != "control"], r[r.kind == "control"]
            row = {"benchmark": name, "group": g}
            for tag, col in (("same", "verdict_same"), ("fused", "verdict_fused")):
                v = layers[col].dropna()
                v = v[v != ""]
                row.update({f"{tag}_n": len(v), f"{tag}_supported": int((v == "supported").sum()),
                            f"{tag}_refuted": int((v == "refuted").sum())})
            c = ctrl.iloc[0] if len(ctrl) else None
            row.update(control_diff=c.diff_fused if c is not None else np.nan,
                       control_lo=c.lo_fused if c is not None else np.nan,
                       control_hi=c.hi_fused if c is not None else np.nan,
                       control_verdict=c.verdict_fused if c is not None else "")
            rows.append(row)
    return pd.DataFrame(rows)


def increment_figure(table: pd.DataFrame, groups: Sequence[str] = ("near", "far")) -> "Figure":
    """Per group, by depth: AUROC(gradient) − AUROC(same layer's forward statistic) and AUROC(fusion)
    − AUROC(best forward score), with simultaneous intervals; the positive control (ODIN's step)
    at the right. A bar that clears 0 upwards is information a forward pass lacks."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend

    groups = [g for g in groups if ((table.ood == g) & (table.group == g)).any()]
    if not groups:
        raise OODInputError(f"the table has no group rows among {list(groups)}")
    fig, axes = plt.subplots(len(groups), 1, figsize=(6.6, 2.1 * len(groups) + 1.5), dpi=150, squeeze=False,
                             sharex=True, layout="constrained")
    for ax, g in zip(axes[:, 0], groups):
        t = table[(table.ood == g) & (table.group == g)]
        layers = t[t.kind != "control"].reset_index(drop=True)
        x = np.arange(len(layers))
        for col, lo, hi, dx, color, label in (
                ("diff_same", "lo_same", "hi_same", -0.15, "C0", "gradient − same layer's forward statistic"),
                ("diff_fused", "lo_fused", "hi_fused", 0.15, "C1", "best forward + gradient − best forward")):
            ok = layers[col].notna().to_numpy()
            d = layers[ok]
            ax.errorbar(x[ok] + dx, d[col], yerr=np.vstack([d[col] - d[lo], d[hi] - d[col]]), fmt="o", ms=3.5,
                        capsize=2, lw=1.1, color=color, label=label)
        ctrl = t[t.kind == "control"]
        if len(ctrl):
            c = ctrl.iloc[0]
            ax.errorbar([len(layers)], [c.diff_fused], yerr=[[c.diff_fused - c.lo_fused], [c.hi_fused - c.diff_fused]],
                        fmt="s", ms=4, capsize=2, color="C3", label="positive control: ODIN's step − S_T")
        ax.axhline(0, color="0.3", lw=0.8)
        names = [*layers.layer.astype(str), *(["ODIN"] if len(ctrl) else [])]
        ax.set_xticks(np.arange(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{g} OOD", fontsize=9, loc="left")
        ax.set_ylabel("Δ AUROC (points)")
        ax.grid(alpha=0.3)
    return finish_panels(fig, axes, "layer (input side → last block below the head); bars: simultaneous 95 % intervals",
                         ncol=1)
