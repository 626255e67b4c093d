# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (ch-depth)=
# # Below the head and at the input
#
# **Question.** The closed forms stop at the convolutions ({numref}`fig-schematic`): the
# gradients of deeper layers and of the input have to be computed. Do they carry OOD information
# that no forward-only score has?
#
# **Answer.** Added to the best forward score, a layer's gradient raises its AUROC in
# {glue:text}`nb03c_inc_fused_supported:d` of {glue:text}`nb03c_inc_fused_n:d` layer × group tests,
# while ODIN's input-gradient step, the positive control, does in
# {glue:text}`nb03c_inc_control_supported:d` of {glue:text}`nb03c_inc_control_n:d`
# ({ref}`sec-depth-increment`).
#
# **Parameters** (the folded cell below): `DATA_ROOT` (or `$OOD_DATA_ROOT`) computes every
# benchmark in `REAL` live instead of reading the results recorded in `RECORDED`; `N_ID`,
# `N_OOD`, `N_FIT` subsample a live run's sets, `N_BOOT` sets the bootstrap resamples, `DEVICE`
# where the networks run. The per-layer runs are recorded (`tools/record_depth.py`); the studies are those of {ref}`ch-evaluation`.

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import pandas as pd

from ood_lib.book import glue, newer, plots, report
from ood_lib.book.tables import captioned
from ood_lib.findings.depth import depth_figure
from ood_lib.findings.increment import increment_figure, increment_summary
from ood_lib.findings.labels import short_pair
from ood_lib.findings.study import load_tables

# %% tags=["parameters", "hide-cell"]
DATA_ROOT = ""
RECORDED = "../results/recorded"
REAL = "mnist,cifar10,cifar10_densenet,imagenet_lite,imagenet_lite1,imagenet_lite2,imagenet_vit"
DEVICE = "auto"
SEED = 0
N_BOOT = 1000
N_ID = None
N_OOD = None
N_FIT = None

# %%
studies = report.load_studies(
    REAL.split(","), root=DATA_ROOT, recorded=RECORDED, device=DEVICE,
    seed=SEED, n_boot=N_BOOT, n_id=N_ID, n_ood=N_OOD, n_fit=N_FIT,
    progress=False)

# %% [markdown]
# (sec-depth)=
# ## Below the head: does a deeper gradient add anything?
#
# Closed forms reach the linear layers and the last convolution before pooling
# ({ref}`ch-closed-forms`); the other layers' gradient norms have to be computed — so the
# question is whether they carry OOD information that no forward-only score has. For each
# block of the network, GradNorm's loss differentiated with respect to that block's parameters
# (per-sample $\ell_1$ norm), the whole network, and the input; the AUROC of each, against one
# forward-only reference per benchmark (the gradient-free detector with the best mean AUROC over
# its near and far sets together), with simultaneous paired-bootstrap intervals over the layers
# (recorded on seeded subsets; `tools/record_depth.py`).

# %%
depth = load_tables(RECORDED, studies, "depth.csv")
increment = load_tables(RECORDED, studies, "increment.csv")
# one row per layer × group (near, far) below the head (the blocks the increment test keeps): its
# verdicts against the best forward-only score and against the last-layer closed form
heads = {b: set(t.layer[t.kind == "block"]) - set(increment[b].layer)
         for b, t in depth.items() if b in increment}
rows = pd.concat([newer.group_summaries(t[~t.layer.isin(heads.get(b, ()))]).dropna(subset="verdict_family")
                  for b, t in depth.items()]) if depth else pd.DataFrame(columns=["verdict_family", "verdict_vs_gradnorm"])
beat = {"beat_best": int((rows.verdict_family == "supported").sum()),
        "beat_gradnorm": int((rows.verdict_vs_gradnorm == "supported").sum())}

# %% tags=["remove-cell"]
for key, value in {"n": len(rows), **beat, "pairs": ", ".join(map(short_pair, depth)),
                   "heads": ", ".join(sorted(set().union(*heads.values()))) or "none"}.items():
    glue(f"nb03c_depth_{key}", value)

# %% tags=["hide-input"]
for b in ("mnist", "cifar10", "cifar10_densenet"):
    fig = (depth_figure(depth[b]) if b in depth else
           plots.placeholder(f"no depth results recorded for {b}"))
    glue(f"nb03c_fig_depth_{b}", fig)
    plt.close(fig)

# %% [markdown]
# On {glue:text}`nb03c_depth_pairs`, {glue:text}`nb03c_depth_beat_best` of the
# {glue:text}`nb03c_depth_n` layer × group comparisons below the head put a deeper gradient's AUROC
# above the best forward-only score with the interval clear of 0; {glue:text}`nb03c_depth_beat_gradnorm` beat the
# last-layer closed form itself ({numref}`fig-depth-cifar10`, {numref}`fig-depth-densenet`,
# {numref}`fig-depth-mnist`). The ImageNet model is not part of this recording: per-sample
# gradients of every layer of EfficientNet-Lite0 take over a second per image on a CPU, so its run
# is left to a GPU (`python tools/record_depth.py --data-root DIR --only imagenet_lite`).
#
# ```{glue:figure} nb03c_fig_depth_cifar10
# :name: fig-depth-cifar10
# :alt: AUROC with intervals of GradNorm taken at each block of ResNet-20, from the input side to the head, with horizontal lines for the whole network, the last-layer closed form and the best forward-only score.
#
# Where a block's interval stays below the top line, its gradient adds nothing the best
# forward-only score lacks; {glue:text}`nb03c_depth_beat_best` of {glue:text}`nb03c_depth_n`
# layer × group comparisons rise above it. AUROC of GradNorm taken with respect to each block of ResNet-20 (input side on the left), with
# 95 % intervals, on CIFAR-10; horizontal lines: the whole network, the last-layer closed form and
# the best forward-only score.
# ```
#
# ::::{dropdown} The same by block for DenseNet-BC-100 and the MNIST CNN
# ```{glue:figure} nb03c_fig_depth_cifar10_densenet
# :name: fig-depth-densenet
# :alt: The same AUROC by block for DenseNet-BC-100.
#
# The same reading for DenseNet-BC-100 (per dense block and transition).
# ```
#
# ```{glue:figure} nb03c_fig_depth_mnist
# :name: fig-depth-mnist
# :alt: The same AUROC by layer for the small CNN on MNIST.
#
# The same reading for the small CNN on MNIST.
# ```
# ::::
#
# The head itself ({glue:text}`nb03c_depth_heads`, with its bias) is left out of these counts: its
# gradient is the closed form's, not a deeper one. Held against the best *penultimate* detector,
# a block's row mixes two questions — is a deeper layer better, and is a gradient better than a
# forward pass? The next section asks the second one alone.

# %% [markdown]
# (sec-depth-increment)=
# ### Does a layer's gradient add to a forward pass?
#
# Each layer's gradient against two forward-only readings of *the same layer*, with
# simultaneous intervals over every comparison of a benchmark and group
# (`ood_lib.findings.increment`, recorded by `tools/record_depth.py --tables increment` on the depth
# runs' images):
#
# * **same layer** — the gradient norm against the better of the layer's activation $\ell_1$ norm
#   and the Mahalanobis score of its channel-pooled activation (class means and one shared
#   covariance fitted on ID training images only, as {cite:t}`lee2018mahalanobis` do per layer); the
#   better of the two is picked on the evaluated images, which favours the forward side;
# * **fusion** — $z(\text{best forward score}) + z(\text{gradient norm})$ against the best forward
#   score alone, each $z$ fitted on a seeded half of the ID test images, every AUROC taken on the
#   other half: information the forward score lacks would raise the fused AUROC;
# * **positive control** — ODIN's step along the input gradient against $S_T$ at $\varepsilon = 0$
#   ({cite:t}`liang2018odin`), a use of a gradient known to add on CIFAR-10: the test must be able
#   to see it.
#
# Per benchmark × model and group, the tally of the layers' verdicts and the control
# ({numref}`fig-increment-cifar10`, {numref}`fig-increment-densenet` draw them by layer):

# %% tags=["hide-input"]
inc_rows = newer.increment_rows(increment)
captioned(inc_rows, "Each layer's gradient against the same layer's forward statistics and fused with "
          "the best forward score: verdicts of simultaneous 95 % intervals; the control in points") \
    if len(inc_rows) else None

# %%
# the tallies over every benchmark × model and group (near, far)
tally = increment_summary(increment)
inc = {"fused_n": int(tally.fused_n.sum()), "fused_supported": int(tally.fused_supported.sum()),
       "fused_refuted": int(tally.fused_refuted.sum()), "same_n": int(tally.same_n.sum()),
       "same_supported": int(tally.same_supported.sum()), "same_refuted": int(tally.same_refuted.sum()),
       "control_n": len(tally), "control_supported": int((tally.control_verdict == "supported").sum())} \
    if len(tally) else dict.fromkeys(["fused_n", "fused_supported", "fused_refuted", "same_n", "same_supported",
                                      "same_refuted", "control_n", "control_supported"], 0)

# %% tags=["remove-cell"]
for key, value in inc.items():
    glue(f"nb03c_inc_{key}", value)
for b in ("cifar10", "cifar10_densenet"):
    fig = increment_figure(increment[b]) if b in increment else plots.placeholder(
        f"no increment test recorded for {b}")
    glue(f"nb03c_fig_increment_{b}", fig)
    plt.close(fig)

# %% [markdown]
# Fused with the best forward score, a layer's gradient adds information with the interval clear
# of 0 in {glue:text}`nb03c_inc_fused_supported` of {glue:text}`nb03c_inc_fused_n` layer × group
# tests and lowers it in {glue:text}`nb03c_inc_fused_refuted`; against its own layer's forward
# statistics it is above in {glue:text}`nb03c_inc_same_supported` and below in
# {glue:text}`nb03c_inc_same_refuted` of {glue:text}`nb03c_inc_same_n`. The positive control clears
# 0 in {glue:text}`nb03c_inc_control_supported` of {glue:text}`nb03c_inc_control_n` cells, so the
# test can see a gradient that adds.
#
# ```{glue:figure} nb03c_fig_increment_cifar10
# :name: fig-increment-cifar10
# :alt: Per block of ResNet-20, the AUROC difference of its gradient against the same block's forward statistic and of the fused score against the best forward score, with simultaneous intervals, and ODIN's step as the control.
#
# An orange bar clear of 0 upwards would be information the best forward score lacks
# ({glue:text}`nb03c_inc_fused_supported` of {glue:text}`nb03c_inc_fused_n` over all units);
# a blue one, a gradient that beats its own layer's forward statistics; the control (red, right)
# shows what a gain looks like. ResNet-20 on CIFAR-10, near and far OOD: per block, the
# gradient − the same block's forward statistic (blue) and best forward + gradient − best forward
# (orange), simultaneous 95 % intervals.
# ```
#
# ::::{dropdown} The same by block for DenseNet-BC-100
# ```{glue:figure} nb03c_fig_increment_cifar10_densenet
# :name: fig-increment-densenet
# :alt: The same differences by block for DenseNet-BC-100.
#
# The same reading for DenseNet-BC-100.
# ```
# ::::

# %% [markdown]
# (sec-odin-first-order)=
# ### ODIN's step, to first order
#
# ODIN moves the input along $\nabla_x \log S_T$; to first order its step adds
# $\varepsilon\lVert\nabla_{\text{pixel}}\log S_T\rVert_1$, an input-gradient norm, to
# $\log S_T$ ({ref}`ch-closed-forms`). ODIN's gain over $S_T$ at the same temperature, and the
# gain of that first-order score alone, with paired 95 % intervals (the depth runs' subsets):

# %% tags=["hide-input"]
odin_t = load_tables(RECORDED, studies, "depth_odin.csv")
odin = newer.odin_rows(odin_t)
captioned(odin, "ODIN and its first-order term against S_T: AUROC (%) "
          "and differences in points") if len(odin) else None

# %% [markdown]
# The cells where ODIN's gain over $S_T$ has its interval above 0:

# %%
cells = pd.concat([newer.group_summaries(t) for t in odin_t.values()]
                  ) if odin_t else pd.DataFrame(columns=["gain_lo", "explained"])
gains = cells[cells.gain_lo > 0]

# %% tags=["remove-cell"]
glue("nb03c_odin_n", len(cells))
glue("nb03c_odin_gain_n", len(gains))
glue("nb03c_odin_explained", f"{gains.explained.min():.2f} to {gains.explained.max():.2f}" if len(gains) else "—")

# %% [markdown]
# ODIN's step raises the AUROC with the interval above 0 in {glue:text}`nb03c_odin_gain_n` of the
# {glue:text}`nb03c_odin_n` benchmark × model × group cells; there, the first-order term alone
# accounts for {glue:text}`nb03c_odin_explained` times the gain.

# %% [markdown]
# (sec-newer)=
# ## Newer detectors: which of them need a gradient?
#
# Detectors published after GradNorm — the gradient scores GradOrth {cite}`behpour2023gradorth`,
# a K-FAC natural gradient and the gradient uncertainty of {cite:t}`oberdiek2018gradient`, and the
# forward-only ViM {cite}`wang2022vim`, ASH {cite}`djurisic2023ash`, SCALE {cite}`xu2024scale`,
# DICE {cite}`sun2022dice`, GEN {cite}`liu2023gen`, fDBD {cite}`liu2024fdbd` and NNGuide
# {cite}`park2023nnguide` — each with the backward pass it needs, read from the library's
# registry (a score computed from its closed form needs none; {ref}`ch-closed-forms` derives
# each), and how it relates to the $U\cdot V$ family:

# %%
kinds_of = newer.newer_table(studies, "far")
captioned(kinds_of[["backward pass", "relation to U·V"]],
          "Newer detectors: backward pass and relation to U·V")

# %% [markdown]
# Their mean AUROC over the far OOD sets, per benchmark × model:

# %% tags=["hide-input"]
pairs = [c for c in kinds_of.columns
         if c not in ("backward pass", "relation to U·V")]
captioned(kinds_of[pairs], "Newer detectors: mean AUROC (%), far OOD sets",
          "{:.1f}", best="max", columns=4)

# %% [markdown]
# The best of the gradient scores (all computed without a backward pass) against the best of the
# forward-only ones, per group:

# %% tags=["hide-input"]
kinds = pd.concat({g: newer.best_by_kind(studies, g)
                   for g in ("near", "far")}, names=["group"])
order = [short_pair(b) for b in studies]
kinds = kinds.swaplevel().sort_index(
    level=0, key=lambda p: p.map(order.index), sort_remaining=False)
aurocs = ["gradient AUROC", "forward-only AUROC"]
captioned(kinds.style.format("{:.1f}", subset=aurocs),
          "Best newer gradient score and best newer forward-only "
          "detector, mean AUROC (%)")

# %%
# cells where the best gradient score is above the best forward-only detector
wins = int((kinds["gradient AUROC"] > kinds["forward-only AUROC"]).sum())

# %% tags=["remove-cell"]
glue("nb03c_newer_grad_wins", wins)
glue("nb03c_newer_n", len(kinds))

# %% [markdown]
# The best newer gradient score is above the best newer forward-only detector in
# {glue:text}`nb03c_newer_grad_wins` of {glue:text}`nb03c_newer_n` benchmark × model × group
# cells. Only GAIA {cite}`chen2023gaia` genuinely differentiates below the head: it aggregates the
# gradients of inner feature maps, and only its last-layer part has a closed form. What the inner
# layers add, on {glue:text}`nb03c_gaia_pairs` (recorded on the same seeded subsets as the depth
# runs, `tools/record_depth.py`): GAIA-A with every layer against its last-layer part alone, and
# against the best forward-only score, paired 95 % intervals:

# %% tags=["hide-input"]
gaia_t = load_tables(RECORDED, studies, "gaia.csv")
gaia = newer.gaia_rows(gaia_t)
captioned(gaia, "GAIA-A: all layers against its last layer and against "
          "the best forward-only score (AUROC, %)")

# %%
# GAIA-A with every layer, per pair and group: its verdicts against its last-layer part and
# against the best forward-only score
full = pd.concat([newer.group_summaries(t).query(
    "part == 'all_layers' and variant == 'A'") for t in gaia_t.values()]
                 ) if gaia_t else pd.DataFrame(columns=["verdict_vs_last", "verdict"])
beats = {"beats_last": int((full.verdict_vs_last == "supported").sum()),
         "beats_best": int((full.verdict == "supported").sum())}

# %% tags=["remove-cell"]
for key, value in {"n": len(full), **beats, "pairs": ", ".join(dict.fromkeys(
        gaia.index.get_level_values(0))) if len(gaia) else "none"}.items():
    glue(f"nb03c_gaia_{key}", value)

# %% [markdown]
# With its inner layers GAIA-A beats its own last-layer part in
# {glue:text}`nb03c_gaia_beats_last` of {glue:text}`nb03c_gaia_n` benchmark × model × group cells
# (interval clear of 0), and the best forward-only score in {glue:text}`nb03c_gaia_beats_best`.
# GAIA is read as its authors orient it (larger abnormality = OOD); an AUROC below 50 means the
# OOD images look *less* abnormal than the ID ones. The library hooks every BatchNorm layer (the
# convolutions on the MNIST CNN, which has none), where the authors hooked only the last stages
# of their ResNets for GAIA-A; the per-set rows and GAIA-Z are in `results/recorded/*/gaia.csv`.
