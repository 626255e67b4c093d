"""Gradients below the head: does any of them carry OOD information that a forward pass does not?
(chapter *Gradient scores and their closed forms*, section on depth).

* :func:`depth_table` — GradNorm's gradient norm ‖∇ KL(u ‖ p)‖₁ (per image, read as published:
  larger = ID) taken w.r.t. each block of the network (:func:`layer_blocks`), the whole network
  (the sum of the blocks' L1 norms = the L1 norm of the full parameter gradient) and the input
  pixels, each held against (a) GradNorm's last-layer closed form ‖h‖₁‖p − u‖₁ and (b) the best
  gradient-free score (:func:`best_forward_only`, or any scores passed in) with the paired
  bootstrap of the pre-registered rule (:class:`ood_lib.stats.paired.PairedBootstrap`).
* :func:`odin_first_order` — ODIN as an input-gradient score. To first order the ODIN step
  raises log S_T by ε‖∇_pixel log S_T‖₁; the table compares the actual rise with that
  prediction and the AUROC of S_T at ε = 0, after the step, of the first-order score
  log S_T + ε‖∇_pixel log S_T‖₁, and of the gradient norm alone.
* :func:`gaia_table` — GAIA (Chen et al., NeurIPS 2023) over its hooked layers against its own
  last layer in closed form (:mod:`ood_lib.gradients.gaia`) and against the same gradient-free reference.

All take a prepared benchmark (:func:`ood_lib.run.evaluate.prepare`) and read its images again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._checks import OODInputError
from .claims import LEVEL, N_BOOT
from ..detectors import DETECTORS, AutogradGradient, GradientClosedForm, canonical, create
from ..detectors.model_access import log_msp_and_input_gradient, odin_perturb
from ..run.evaluate import Prepared, detector_scores
from ..run.features import batch_loader
from ..gradients.layers import INPUT, call_order, fastest_method, layer_grad_norms
from .labels import method_label
from ..gradients.signals import channel_std
from ..stats.metrics import auroc
from ..stats.paired import PairedBootstrap
from .paired_tables import checked_reference, paired_rows, targets

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DEPTH_COLUMNS", "GAIA_COLUMNS", "GAIA_LAST", "GAIA_MAIN", "best_forward_only", "depth_figure",
           "depth_scores", "depth_table", "forward_only_methods", "gaia_scores", "gaia_table", "layer_blocks",
           "odin_first_order", "odin_terms"]

NETWORK, GRADNORM = "network", "gradnorm"
GAIA_LAST = {"gaia": "gaia_last", "gaia_z": "gaia_z_last"}  # GAIA over the hooked layers -> its last layer
GAIA_VARIANT = {"gaia": "A", "gaia_last": "A", "gaia_z": "Z", "gaia_z_last": "Z"}
GAIA_MAIN = ("gaia", "gaia_z")
_STATS = ["ood", "group", "auroc", "auroc_lo", "auroc_hi", "fpr95"]
_FAMILY = ["lo_family", "hi_family", "verdict_family"]
DEPTH_COLUMNS = ["layer", "kind", "depth", *_STATS, "diff_vs_gradnorm", "lo_vs_gradnorm", "hi_vs_gradnorm",
                 "diff_vs_best", "lo_vs_best", "hi_vs_best", "verdict", "verdict_vs_gradnorm", *_FAMILY]
GAIA_COLUMNS = ["method", "variant", "part", *_STATS, "diff_vs_last", "lo_vs_last", "hi_vs_last",
                "diff_vs_best", "lo_vs_best", "hi_vs_best", "verdict_vs_last", "verdict", *_FAMILY]


# --- blocks and per-image scores ------------------------------------------------------------
def layer_blocks(model: nn.Module, x: torch.Tensor | None = None) -> dict[str, list[str]]:
    """Readable blocks of a network: ``{label: parameter names}``.

    Top-level children are blocks; a top-level ``nn.Sequential``/``nn.ModuleList`` is split into its
    items (ResNet stages into residual blocks), and a child holding more than half of all parameter
    tensors (a wrapped backbone) is split the same way. With ``x``, the blocks are ordered by the
    first use of their layers in a forward pass of ``x[:1]`` (input side first), else by registration.
    """
    total = sum(1 for _ in model.parameters())

    def split(prefix: str, module: nn.Module, seq_ok: bool) -> dict[str, list[str]]:
        out = {f"{prefix}{n}": [f"{prefix}{n}"] for n, _ in module.named_parameters(recurse=False)}
        for name, child in module.named_children():
            label = f"{prefix}{name}"
            n = sum(1 for _ in child.parameters())
            parts = sum(1 for c in child.children() if any(True for _ in c.parameters()))
            is_seq = isinstance(child, (nn.Sequential, nn.ModuleList))
            if n and parts > 1 and ((is_seq and seq_ok) or n > total / 2):
                out.update(split(label + ".", child, seq_ok=not is_seq))
            elif n:
                out[label] = [f"{label}.{p}" for p, _ in child.named_parameters()]
        return out

    blocks = split("", model, True)
    if x is None:
        return blocks
    calls = call_order(model, x, lambda m: any(True for _ in m.parameters(recurse=False)))
    first = {n: i for i, n in enumerate(dict.fromkeys(calls))}
    used = {p: first.get(p.rsplit(".", 1)[0] if "." in p else "", len(first)) for ps in blocks.values() for p in ps}
    return dict(sorted(blocks.items(), key=lambda kv: min(used[p] for p in kv[1])))


def _sets(prep: Prepared, sets: Sequence[str] | None) -> list[str]:
    return ["id_test", *prep.ood_keys] if sets is None else list(sets)


def _std(prep: Prepared, input_std: Any) -> Any:
    return prep.benchmark.preprocessing.std if input_std is None else input_std


def depth_scores(prep: Prepared, *, blocks: Mapping[str, Sequence[str]] | None = None,
                 sets: Sequence[str] | None = None, method: str | None = None, chunk_size: int = 64,
                 input_std: Any = None, progress: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """``{score: {set: per-image values}}`` for ``"input"``, every block and ``"network"``:
    ‖∇ KL(u ‖ p)‖₁ w.r.t. the input pixels (std from the benchmark's preprocessing unless given),
    the block's parameters, and all parameters. ``method`` defaults to the fastest exact path
    (:func:`ood_lib.gradients.layers.fastest_method`)."""
    from tqdm.auto import tqdm

    model = prep.model.to(prep.device).eval()
    method = method or fastest_method(model)
    std = _std(prep, input_std)
    out: dict[str, dict[str, np.ndarray]] = {}
    for k in _sets(prep, sets):
        parts: dict[str, list[torch.Tensor]] = {}
        loader = batch_loader(prep.splits[k].dataset, prep.batch_size, device_type=prep.device.type)
        bar = tqdm(loader, desc=f"{prep.name}/{k}: gradients by depth", disable=not progress, leave=False)
        for x, _y, ok in bar:
            x = x[ok].to(prep.device)
            if len(x) == 0:
                continue
            if blocks is None:
                blocks = layer_blocks(model, x)
            l1 = layer_grad_norms(model, x, method=method, chunk_size=chunk_size, wrt_input=True, input_std=std,
                                  norms=("l1",))["l1"]
            l1 = {n: v.detach().double().cpu() for n, v in l1.items()}  # sums in float64
            row = {INPUT: l1[INPUT], **{b: sum(l1[p] for p in ps) for b, ps in blocks.items()},
                   NETWORK: sum(v for n, v in l1.items() if n != INPUT)}
            for name, v in row.items():
                parts.setdefault(name, []).append(v)
        for name, v in parts.items():
            out.setdefault(name, {})[k] = torch.cat(v).numpy()
    return out


def forward_only_methods() -> list[str]:
    """Registered detectors that need no gradient: no gradient score (closed form or autograd), no
    input perturbation, each distinct ranking once, and not GradNorm's own form."""
    gn = canonical(GRADNORM)
    return [n for n, e in DETECTORS.items() if not e.cls.needs.inputs and canonical(n) == n and n != gn
            and not issubclass(e.cls, (GradientClosedForm, AutogradGradient))]


def best_forward_only(prep: Prepared, names: Sequence[str] | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """The gradient-free method with the best mean AUROC over the near and far OOD sets of ``prep``,
    and its scores per set. It is chosen on the data it is compared on, which favours it: a layer
    that beats it has beaten the strongest forward-only competitor available."""
    keys = [k for k in prep.ood_keys if prep.splits[k].group != "covariate"] or prep.ood_keys
    best, best_auc, best_s = None, -np.inf, None
    for n in names or forward_only_methods():
        det = create(n, model=prep.model, **prep.config.params_for(n))
        if det.not_applicable(prep.fit_data if det.needs.fit else None):
            continue
        s = detector_scores(prep, det)
        a = float(np.mean([auroc(s["id_test"], s[k]) for k in keys]))
        if a > best_auc:
            best, best_auc, best_s = n, a, s
    if best is None:
        raise OODInputError("no gradient-free method is applicable here")
    return best, best_s


# --- the paired tables: GradNorm by depth, GAIA's aggregation ------------------------------------
def depth_table(prep: Prepared, reference: Mapping[str, Any], reference_name: str = "best forward-only", *,
                scores: Mapping[str, Mapping[str, Any]] | None = None, n_boot: int = N_BOOT, seed: int | None = None,
                level: float = LEVEL, **depth_kw: Any) -> pd.DataFrame:
    """AUROC (and FPR95) of GradNorm's gradient norm by depth, per OOD set and per group.

    ``reference``: ``{set: scores}`` (ID test set and every OOD set) of the gradient-free score to
    beat; ``scores``: :func:`depth_scores` output (computed here when None, with ``depth_kw``).
    Rows: one per (score, set) and per (score, group) (mean over the group's sets). ``kind`` is
    input / block / network / reference; ``depth`` is 0 for the input and 1, 2, … for the blocks
    from the input side. ``diff_vs_gradnorm`` / ``diff_vs_best`` are AUROC differences (points)
    with paired-bootstrap percentile intervals (``lo_*``, ``hi_*``); ``verdict``: whether the
    score beats the gradient-free reference (:func:`ood_lib.stats.paired.verdict`, direction +1), and
    ``verdict_vs_gradnorm`` whether it beats GradNorm's closed form; ``verdict_family``: the first
    from simultaneous intervals over all input/block/network scores (max-statistic).
    """
    if scores is None:
        scores = depth_scores(prep, **depth_kw)
    ref = checked_reference(prep, reference, scores)
    layers, best = list(scores), f"ref:{reference_name}"
    table = {**scores, GRADNORM: detector_scores(prep, create(GRADNORM)), best: ref}
    rows = paired_rows(prep, table, layers, best, {"gradnorm": dict.fromkeys(table, GRADNORM),
                                                   "best": dict.fromkeys(table, best)}, n_boot, seed, level)
    depth = {INPUT: 0, **{n: i for i, n in enumerate([x for x in layers if x not in (INPUT, NETWORK)], 1)}}
    for row in rows:
        n = row.pop("name")
        kind = "reference" if n in (GRADNORM, best) else n if n in (INPUT, NETWORK) else "block"
        row.update(layer=n.removeprefix("ref:"), kind=kind, depth=depth.get(n, np.nan))
    df = pd.DataFrame(rows, columns=DEPTH_COLUMNS)
    df.attrs.update(reference=reference_name, n_boot=n_boot, level=level, benchmark=prep.name)
    return df


def _gaia_names(variants: Sequence[str]) -> list[str]:
    """Each GAIA variant followed by its last-layer part; an unknown or empty list is refused."""
    unknown = [v for v in variants if v not in GAIA_LAST]
    if unknown or not variants:
        raise OODInputError(f"GAIA variants must be among {sorted(GAIA_LAST)}, got {list(variants)!r}")
    return [m for v in variants for m in (v, GAIA_LAST[v])]


def gaia_scores(prep: Prepared, variants: Sequence[str] = GAIA_MAIN) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Each GAIA variant and its last-layer part (:data:`GAIA_LAST`) scored on every set of ``prep``
    with the run's hyper-parameters: ``{method: {set: scores}}`` and the seconds each method took."""
    scores, seconds = {}, {}
    for n in _gaia_names(variants):
        t0 = time.perf_counter()
        scores[n] = detector_scores(prep, create(n, model=prep.model, **prep.config.params_for(n)))
        seconds[n] = time.perf_counter() - t0
    return scores, seconds


def gaia_table(prep: Prepared, reference: Mapping[str, Any], reference_name: str = "best forward-only", *,
               variants: Sequence[str] = GAIA_MAIN, scores: Mapping[str, Mapping[str, Any]] | None = None,
               n_boot: int = N_BOOT, seed: int | None = None, level: float = LEVEL) -> pd.DataFrame:
    """What GAIA's aggregation over the hooked layers adds to its last layer, and to a forward pass.

    ``variants``: registered GAIA detectors (by default GAIA-A and GAIA-Z, the two the paper
    proposes and reports), each scored beside its last-layer closed form (:data:`GAIA_LAST`,
    :mod:`ood_lib.gradients.gaia`) with the run's hyper-parameters (``prep.config.params_for``); ``scores``:
    ``{method: {set: scores}}`` given instead of computed. Rows per (method, OOD set) and
    (method, group), the same paired bootstrap as :func:`depth_table`: ``part`` is all_layers /
    last_layer / reference; ``diff_vs_last`` = AUROC(GAIA) − AUROC(its last-layer part) and
    ``diff_vs_best`` = AUROC(method) − AUROC(reference), in points, with intervals ``lo_*``/``hi_*``;
    ``verdict_vs_last``: whether the aggregation beats the last layer, ``verdict``: whether the
    method beats the reference; ``verdict_family``: the latter with simultaneous intervals.
    """
    names = _gaia_names(variants)
    if scores is None:
        scores, _ = gaia_scores(prep, variants)
    missing = [n for n in names if n not in scores]
    if missing:
        raise OODInputError(f"scores has no entry for {missing}")
    scores = {n: scores[n] for n in names}
    ref = checked_reference(prep, reference, scores)
    best = f"ref:{reference_name}"
    table = {**scores, best: ref}
    rows = paired_rows(prep, table, names, best, {"last": {v: GAIA_LAST[v] for v in variants},
                                                  "best": dict.fromkeys(table, best)}, n_boot, seed, level)
    for row in rows:
        n = row.pop("name")
        row.update(method=n.removeprefix("ref:"), variant=GAIA_VARIANT.get(n, ""),
                   part="reference" if n == best else "all_layers" if n in GAIA_LAST else "last_layer")
    df = pd.DataFrame(rows, columns=GAIA_COLUMNS)
    df.attrs.update(reference=reference_name, n_boot=n_boot, level=level, benchmark=prep.name)
    return df


def depth_figure(table: pd.DataFrame, groups: Sequence[str] | None = None) -> "Figure":
    """AUROC by depth with bootstrap intervals, one panel per OOD group; horizontal lines for the
    whole network, GradNorm's closed form and the best gradient-free score."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend

    groups = [g for g in ("near", "far", "covariate") if g in set(table.ood)] if groups is None else list(groups)
    if not groups:
        raise OODInputError("the table has no group rows (near / far / covariate)")
    # one panel per group, stacked and sized to be shown near 1:1 in the book's text column
    fig, axes = plt.subplots(len(groups), 1, figsize=(6.6, 2.2 * len(groups) + 1.6), dpi=150, squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    for ax, g in zip(axes[:, 0], groups):
        t = table[table.ood == g]
        d = t[t.depth.notna()].sort_values("depth")
        err = np.vstack([d.auroc - d.auroc_lo, d.auroc_hi - d.auroc])
        ax.errorbar(d.depth, d.auroc, yerr=err, fmt="o-", color="C0", capsize=2, lw=1.2, ms=4,
                    label="GradNorm w.r.t. the layer")
        for (_, r), style, color in zip(t[t.depth.isna()].iterrows(), ("-.", "--", ":"), ("C2", "C3", "C1")):
            name = {"network": "whole network", "gradnorm": "GradNorm (head, closed form)"}.get(
                r.layer, f"forward-only reference: {method_label(r.layer)}\n(best over near + far)")
            ax.axhline(r.auroc, ls=style, color=color, lw=1.2, label=name)
            ax.axhspan(r.auroc_lo, r.auroc_hi, color=color, alpha=0.08)
        ax.set_xticks(d.depth, [str(x) for x in d.layer], rotation=45, ha="right", fontsize=8)
        ax.set_title("covariate shift" if g == "covariate" else f"{g} OOD", fontsize=9, loc="left")
        ax.set_ylabel("AUROC (%)")
        ax.grid(alpha=0.3)
    return finish_panels(fig, axes, "layer (input side → head); bars and bands: 95 % intervals", ncol=2)


def finish_panels(fig: "Figure", axes: Any, xlabel: str, ncol: int) -> "Figure":
    """The x label under a column of panels and the first panel's legend below the figure."""
    axes[-1, 0].set_xlabel(xlabel)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    return fig


# --- ODIN as an input-gradient score ------------------------------------------------------------
def odin_terms(prep: Prepared, *, temperature: float = 1000.0, epsilon: float = 0.0014, input_std: Any = None,
               sets: Sequence[str] | None = None, chunk_size: int = 64, progress: bool = False
               ) -> dict[str, dict[str, np.ndarray]]:
    """Per image of every set: ``log_s0`` = log S_T(x) (ε = 0), ``log_s`` = log S_T after ODIN's
    step (:func:`ood_lib.detectors.model_access.odin_perturb`), and ``grad_l1`` = ‖∇_pixel log S_T(x)‖₁
    = Σ_c ‖∂ log S_T/∂x_c‖₁ / std_c (std from the benchmark's preprocessing unless given)."""
    from tqdm.auto import tqdm

    model = prep.model.to(prep.device).eval()
    std_arg = _std(prep, input_std)
    out: dict[str, dict[str, np.ndarray]] = {}
    for k in _sets(prep, sets):
        parts: dict[str, list[torch.Tensor]] = {"log_s0": [], "log_s": [], "grad_l1": []}
        loader = batch_loader(prep.splits[k].dataset, prep.batch_size, device_type=prep.device.type)
        for xb, _y, ok in tqdm(loader, desc=f"{prep.name}/{k}: ODIN terms", disable=not progress, leave=False):
            xb = xb[ok].to(prep.device)
            for x in xb.split(chunk_size) if len(xb) else ():  # a graph for at most chunk_size images
                std = channel_std(std_arg, x.shape[1], x)
                log_s0, g = log_msp_and_input_gradient(model, x, temperature)
                with torch.no_grad():
                    logits = model(odin_perturb(x, g, epsilon, std)).double()
                parts["log_s0"].append(log_s0.cpu())
                parts["log_s"].append(torch.log_softmax(logits / temperature, dim=1).max(dim=1).values.cpu())
                parts["grad_l1"].append((g / std).flatten(1).abs().sum(1).double().cpu())
        out[k] = {t: torch.cat(v).numpy() for t, v in parts.items()}
    return out


def odin_first_order(prep: Prepared, *, terms: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                     temperature: float = 1000.0, epsilon: float = 0.0014, input_std: Any = None, n_boot: int = N_BOOT,
                     seed: int | None = None, level: float = LEVEL, progress: bool = False) -> pd.DataFrame:
    """How much of ODIN's gain over ε = 0 its first-order term explains, per OOD set and group.

    Scores (higher = ID): ``msp_t`` = S_T(x); ``odin`` = S_T(x̃); ``grad`` = ‖∇_pixel log S_T‖₁;
    ``first_order`` = log S_T(x) + ε‖∇_pixel log S_T‖₁. Columns ``auroc_<score>``; ``gain`` =
    AUROC(odin) − AUROC(msp_t) and ``gain_first_order`` = AUROC(first_order) − AUROC(msp_t) with
    paired-bootstrap intervals; ``explained`` = their ratio; over the ID and OOD images of the
    set, ``correlation`` = Pearson correlation of the actual rise log S_T(x̃) − log S_T(x) with the
    predicted ε‖∇_pixel log S_T‖₁, ``ratio_of_means`` = mean actual / mean predicted rise, and
    the mean actual and predicted rise on ID and on OOD images alone.
    """
    terms = odin_terms(prep, temperature=temperature, epsilon=epsilon, input_std=input_std, progress=progress) \
        if terms is None else terms
    sc = {k: {"msp_t": t["log_s0"], "odin": t["log_s"], "grad": t["grad_l1"],
              "first_order": t["log_s0"] + epsilon * t["grad_l1"]} for k, t in terms.items()}
    oods = prep.ood_keys
    pb = PairedBootstrap(sc["id_test"], {k: sc[k] for k in oods}, n_boot=n_boot,
                         seed=prep.config.seed if seed is None else seed)
    rise = {k: t["log_s"] - t["log_s0"] for k, t in terms.items()}
    pred = {k: epsilon * t["grad_l1"] for k, t in terms.items()}
    rows = []
    for ood, group, ks in targets(prep):
        a = pb.auroc(ks)
        row = {"ood": ood, "group": group, "temperature": temperature, "epsilon": epsilon,
               **{f"auroc_{m}": float(a[m]) for m in ("msp_t", "odin", "grad", "first_order")}}
        for tag, m in (("gain", "odin"), ("gain_first_order", "first_order")):
            d = pb.difference(m, "msp_t", sets=ks, level=level)
            row.update({tag: d.estimate, f"{tag}_lo": d.lo, f"{tag}_hi": d.hi})
        row["explained"] = row["gain_first_order"] / row["gain"] if row["gain"] != 0 else np.nan
        r = np.concatenate([rise["id_test"], *(rise[k] for k in ks)])
        q = np.concatenate([pred["id_test"], *(pred[k] for k in ks)])
        row["correlation"] = float(np.corrcoef(r, q)[0, 1]) if r.std() > 0 and q.std() > 0 else np.nan
        row["ratio_of_means"] = float(r.mean() / q.mean()) if q.mean() != 0 else np.nan
        row.update(rise_id=float(rise["id_test"].mean()), pred_id=float(pred["id_test"].mean()),
                   rise_ood=float(np.concatenate([rise[k] for k in ks]).mean()),
                   pred_ood=float(np.concatenate([pred[k] for k in ks]).mean()))
        rows.append(row)
    return pd.DataFrame(rows)
