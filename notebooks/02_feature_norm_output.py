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
# (ch-factors)=
# # Feature norm × output distribution
#
# **Claim.** GradNorm is the product of a feature-norm term $U = \lVert h\rVert_1$ and an output
# term $V = \lVert p - u\rVert_1$; each factor alone is a weaker detector than the product, and the
# gradient adds nothing beyond them. **Answer on {glue:text}`nb02_benchmark`:** the product beats
# both of its factors on {glue:text}`nb02_product_wins` of the {glue:text}`nb02_n_sets` near and
# far OOD sets (mean AUROC over them: $U$ {glue:text}`nb02_auc_u:.1f`, $V$
# {glue:text}`nb02_auc_v:.1f`, $U\cdot V$ {glue:text}`nb02_auc_uv:.1f`; covariate-shift sets,
# which hold the ID classes, are reported apart: {glue:text}`nb02_cov_names`), and GradNorm computed by autograd ranks the images as its closed
# form does (Spearman correlation {glue:text}`nb02_spearman_text`;
# {glue:text}`nb02_auc_phrase`). Whether that supports the claim is decided in
# {ref}`ch-evaluation`, by a rule stated before the numbers, on every benchmark.

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ood_lib.book import glue, plots, tables
from ood_lib.findings import analysis
from ood_lib.findings.labels import BENCHMARK_NAMES, method_label, model_name, set_label, term_label
from ood_lib.run.evaluate import prepare
from ood_lib.scores import GRID_U, GRID_V, U_TERMS, V_TERMS, grid_names
from ood_lib.scores.terms import v_term

plt.rcParams.update(plots.BOOK_STYLE)

# %% [markdown]
# **Parameters.** By default the page runs on the small embedded benchmark, whole. Set
# `BENCHMARK` (e.g. `"cifar10"`) and `DATA_ROOT` (the folder holding its data) to run it on
# another; `N_ID` and `N_OOD` cap the number of ID test and OOD images per set (`None`: all),
# `DEVICE` picks where the forward pass runs (`"auto"`, `"cpu"`, `"cuda"`).

# %% tags=["parameters", "hide-cell"]
BENCHMARK = "embedded"
DATA_ROOT = ""
DEVICE = "auto"
SEED = 0
N_ID = None
N_OOD = None

# %% [markdown]
# ## The $U \cdot V$ family
#
# GradNorm suggests a family of gradient-free scores: a feature term $U(h)$ times an output term
# $V$. For the family to be a fair one, every member is read the same way: both factors are
# non-negative and *larger for in-distribution inputs*, so the product is too, and $V$ does not
# change when a constant is added to all logits (the softmax does not, so a detector built on $p$
# should not either). That rules some familiar terms out of the grid, each for a stated reason —
# the Gini impurity, for example, is largest at the uniform prediction, so its grid form is
# $1 - \text{Gini} = \lVert p\rVert_2^2$; the max logit and $\operatorname{logsumexp}$ change with a
# shift of the logits, so their grid forms subtract the mean logit. The bias rows of the closed forms
# ($\lVert h\rVert_1 + 1$, …) differ from their bias-free rows only by a 1, which matters only where
# the norm itself is near 1: near-duplicates, so the grid leaves them out too. The terms, and why
# some are not grid terms:

# %% tags=["hide-input"]
terms = pd.DataFrame(
    [{"side": side, "term": term_label(t.formula),
      "in the grid": "yes" if t.grid else "no", "why not": t.reason}
     for side, family in (("U", U_TERMS), ("V", V_TERMS))
     for t in family.values()]
)
tables.book_table(
    terms.style.hide(axis="index"),
    "The terms of the U·V family, and why some are not grid terms",
    numbers=False)

# %% tags=["remove-cell"]
glue("nb02_n_grid", len(grid_names()))
glue("nb02_grid_shape", f"{len(GRID_U)} × {len(GRID_V)}")

# %% [markdown]
# The grid is every product of a grid $U$ and a grid $V$ ({glue:text}`nb02_grid_shape`, without
# $1 \cdot 1$): {glue:text}`nb02_n_grid` members, each scored as it is — no member is negated. The
# row $U = 1$ holds output-only scores ($1 \cdot \max_k p_k$ is MSP), and $\lVert h\rVert_1 \cdot
# \lVert p - u\rVert_1$ is GradNorm itself; ExGrad, the Fisher trace and the predicted-label
# gradient mix the two orientations and are kept apart as gradient scores, read both ways.

# %% [markdown]
# ## The V terms over the probability simplex
#
# {numref}`fig-simplex` draws the output terms of the grid over the
# 3-class simplex, each as defined (bright = larger). Every one of them is non-negative, smallest at
# the uniform prediction and largest towards a vertex — the direction "larger = in-distribution" — and
# none is a constant shift of another: the grid's $1 - 2/C + \lVert p\rVert_2^2$ is the panel
# $\lVert p\rVert_2^2$ moved by a constant, so it is not drawn twice. The two terms built from the
# logits, $\max_k f_k - \operatorname{mean}_k f_k$ and $T \operatorname{logsumexp}(f/T) -
# \operatorname{mean}_k f_k$, are the shift-invariant forms of MaxLogit and Energy; at a fixed $T$
# they are functions of $p$ (through $\mathrm{KL}(u \Vert p)$), which is why they can be drawn here.
#
# ExGrad's Gini impurity $\sum_k p_k(1-p_k) = 1 - \lVert p\rVert_2^2$ is the third panel upside
# down: largest at the *uniform* prediction. Its feature factor $\lVert h\rVert_1$ still says
# "larger means in-distribution", so ExGrad's two factors pull in opposite directions; the same holds
# for the Fisher trace ($1 - \lVert p\rVert_2^2$ again) and the predicted-label gradient
# ($1 - \max_k p_k$). These mixed scores are not grid members: they are evaluated in both readings,
# and {ref}`sec-exgrad-orientation` measures what each reading does.

# %% tags=["hide-input"]
terms = ["msp", "pu_l1", "p_l2sq", "kl_u", "maxlogit_gap", "lse_gap"]
fig = plots.simplex_figure(terms)
glue("nb02_fig_simplex", fig)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} nb02_fig_simplex
# :name: fig-simplex
# :alt: Six triangular heat maps, one per output term, over the 3-class probability simplex; each is brightest towards the corners.
#
# Every output term of the grid rises from the uniform prediction towards the one-hot corners. The grid's V terms over the 3-class probability simplex (corners: one-hot predictions; centre:
# uniform), each drawn as defined, $T = 1$. Every panel is larger towards the corners.
# ```

# %% [markdown]
# ## Features and scores
#
# One forward pass per image gives $h$ and the logits (cached on disk); every score on this page
# is a function of those arrays, except GradNorm by autograd, which differentiates the head
# (the classifier's ID test accuracy is {glue:text}`nb02_id_accuracy:.1f` %). The scores compared
# below are $U = \lVert h\rVert_1$ alone, GradNorm's $V = \lVert p - u\rVert_1$ alone, GradNorm,
# their product (up to $1/T$), by its closed form and by autograd, MSP ($\max_k p_k$), the
# gradient-free product $\lVert h\rVert_1 \max_k p_k$, ExGrad in both readings and
# $\lVert p\rVert_2^2$; the code names each by an id, the tables by its formula or published
# name.

# %%
prep = prepare(BENCHMARK, data_root=DATA_ROOT or None, device=DEVICE,
               seed=SEED, n_id=N_ID, n_ood=N_OOD, with_train=False,
               progress=False)
methods = ["l1*one", "one*pu_l1", "gradnorm", "gradnorm_autograd", "msp",
           "l1*msp", "exgrad", "exgrad_flipped", "one*p_l2sq"]
s = analysis.set_scores(prep, methods)
for key, per in s.items():  # the Gini impurity read as ExGrad reads it
    per["gini_as_exgrad"] = v_term("gini", prep.float64(key)[1]).numpy()

# %% tags=["remove-cell"]
glue("nb02_benchmark", f"the {model_name(BENCHMARK)} of the {BENCHMARK_NAMES.get(BENCHMARK, BENCHMARK)} benchmark")
glue("nb02_id_accuracy", prep.id_accuracy)

# %% [markdown]
# ## Each factor alone, and the product
#
# The AUROC of $U$ alone, $V$ alone and GradNorm, their product; the same for MSP, which is
# $V = \max_k p_k$ alone, and $\lVert h\rVert_1 \max_k p_k$. The product *wins* on an OOD set
# where it beats both of its factors. Only the near and far OOD sets count, and only they enter
# the mean; a covariate-shift set holds the ID classes under a shift, so it is shown apart:

# %%
groups = {k: prep.splits[k].group for k in prep.ood_keys}
auc = analysis.metric_table(s, "auroc", groups)  # covariate shift apart
pairs = auc[["l1*one", "one*pu_l1", "gradnorm", "msp", "l1*msp"]]
ood = [k for k, g in groups.items() if g in ("near", "far")]
cov = [k for k, g in groups.items() if g == "covariate"]
per_set = pairs.loc[ood]  # near and far OOD sets only
factors = per_set[["l1*one", "one*pu_l1"]].max(axis=1)
wins = int((per_set["gradnorm"] > factors).sum())

# %% tags=["remove-cell"]
glue("nb02_product_wins", wins)
glue("nb02_n_sets", len(per_set))
glue("nb02_cov_names", ", ".join(set_label(k, BENCHMARK) for k in cov) or "none")
for key, col in (("u", "l1*one"), ("v", "one*pu_l1"), ("uv", "gradnorm"), ("msp", "msp"), ("l1msp", "l1*msp")):
    glue(f"nb02_auc_{key}", float(pairs.loc["mean", col]))

# %% tags=["hide-input"]
# OOD sets, their mean, then the covariate-shift sets (and their mean)
row_order = [*ood, "mean", *cov, *(["covariate"] if len(cov) > 1 else [])]
row_label = {k: set_label(k, BENCHMARK) for k in row_order}
row_label |= {k: f"{row_label[k]} (covariate shift)" for k in cov}
tables.book_table(
    pairs.loc[row_order].rename(index=row_label, columns=method_label)
    .style.format("{:.1f}")
    .highlight_max(axis=1, props="font-weight: bold"),
    "AUROC (%), ID positive; the best of each row in bold. The mean is "
    "over the near and far OOD sets; the covariate-shift rows are apart")

# %% [markdown]
# Multiplying MSP by $\lVert h\rVert_1$ moves its mean AUROC from {glue:text}`nb02_auc_msp:.1f` to
# {glue:text}`nb02_auc_l1msp:.1f`.

# %% [markdown]
# ## The joint distribution of $(U, V)$
#
# Where do ID and OOD images sit in the $(U, V)$ plane? The OOD set shown,
# {glue:text}`nb02_joint_set`, is the one on which the product gains most over its better
# factor. Plotted as it is, $V = \lVert p - u\rVert_1$ crowds against its maximum
# $2(1 - 1/C)$ on confident predictions, and their differences cannot be seen. On the
# {glue:text}`nb02_joint_one_top:.0f` % of the images shown where only the top class has
# $p_k > 1/C$, $\lVert p - u\rVert_1 = 2(\max_k p_k - 1/C)$ exactly, so $V$ orders them as
# $\max_k p_k$ does; on the others the two differ, though both grow with confidence.
# {numref}`fig-joint` therefore draws $-\log_{10}(1 - \max_k p_k)$ — the number of nines in
# $\max_k p_k$ — which spreads the confident predictions apart.

# %% tags=["hide-input"]
gain = per_set["gradnorm"] - factors
shown = str(gain.idxmax())
C = prep.float64("id_test")[1].shape[1]
rest, one_top = {}, []
for k in ("id_test", shown):
    logits = prep.float64(k)[1]
    rest[k] = v_term("one_minus_msp", logits).numpy()  # 1 − max p, exact
    one_top.append((torch.softmax(logits, 1) > 1 / C).sum(1) == 1)
fig = plots.joint_uv_figure(
    s["id_test"]["l1*one"], -np.log10(rest["id_test"]),
    s[shown]["l1*one"], -np.log10(rest[shown]),
    set_label(shown, BENCHMARK), "U = ‖h‖₁",
    "−log₁₀(1 − max p)", v_log=False)
glue("nb02_fig_joint", fig)
plt.close(fig)
share_one_top = float(torch.cat(one_top).double().mean())

# %% tags=["remove-cell"]
glue("nb02_joint_set", set_label(shown, BENCHMARK))
glue("nb02_joint_one_top", 100 * share_one_top)

# %% [markdown]
# ```{glue:figure} nb02_fig_joint
# :name: fig-joint
# :alt: Scatter of the feature norm against the confidence for ID test images and one OOD set, with histograms of each coordinate on the sides.
#
# The two factors separate ID from OOD along different axes, so their product can beat either. The feature norm $U = \lVert h\rVert_1$ (log scale) and the confidence
# $-\log_{10}(1 - \max_k p)$ for the ID test images and one OOD set,
# {glue:text}`nb02_joint_set`, with the distribution of each coordinate on its side (each set's
# bars sum to 1).
# ```

# %% [markdown]
# ## How much of GradNorm each factor carries
#
# On a log scale GradNorm is a sum, $\log S = \log U + \log V - \log T$, so its variance over the
# pooled ID and OOD images splits into a part from each factor and a covariance term:

# %%
u = np.concatenate([per["l1*one"] for per in s.values()])
v = np.concatenate([per["one*pu_l1"] for per in s.values()])
shares = analysis.log_variance_shares(u, v)

# %% tags=["remove-cell"]
for key, share in shares.items():  # u, v, cov
    glue(f"nb02_share_{key}", 100 * share)

# %% tags=["hide-input"]
parts = {"u": "log U", "v": "log V", "cov": "2 cov(log U, log V)"}
share = pd.Series({parts[k]: 100 * x for k, x in shares.items()},
                  name="share (%)")
tables.book_table(share.to_frame().style.format("{:.0f}"),
                  "Shares of var(log GradNorm)")

# %% [markdown]
# The feature norm carries {glue:text}`nb02_share_u:.0f` % of the variance of log GradNorm, the
# output term {glue:text}`nb02_share_v:.0f` %, and their covariance {glue:text}`nb02_share_cov:.0f` %.

# %% [markdown]
# ## Autograd and closed form rank the same way
#
# If the identity holds, the two computations order the images identically and every metric is
# the same. Both are computed here in float64 from the same features:

# %%
a = np.concatenate([per["gradnorm_autograd"] for per in s.values()])
b = np.concatenate([per["gradnorm"] for per in s.values()])
agree = analysis.rank_agreement(a, b)
auc_diff = analysis.auroc_difference(s, "gradnorm", "gradnorm_autograd")

# %% tags=["hide-input"]
# a correlation that may be 1 up to rounding, written "1 − d"
near_one = {k: "exactly 1" if agree[k] == 1 else f"1 − {1 - agree[k]:.1e}"
            for k in ("spearman", "kendall")}
rows = {"Spearman ρ": near_one["spearman"],
        "Kendall τ": near_one["kendall"],
        "images with the same rank": f"{100 * agree['same_rank']:.2f} %",
        "largest AUROC difference": "0 (identical)" if auc_diff == 0
        else f"{auc_diff:.1e} points"}
tables.book_table(pd.Series(rows, name="value").to_frame().style,
                  "GradNorm by autograd against its closed form")

# %% tags=["remove-cell"]
for key, value in {"spearman_text": near_one["spearman"], "kendall_text": near_one["kendall"],
                   "same_rank": 100 * agree["same_rank"], "n_images": len(a),
                   "auc_phrase": "identical AUROCs on every set" if auc_diff == 0
                   else f"AUROCs that differ by at most {auc_diff:.1e} points"}.items():
    glue(f"nb02_{key}", value)

# %% [markdown]
# Over {glue:text}`nb02_n_images` images, {glue:text}`nb02_same_rank:.2f` % have exactly the same
# rank under both computations (Spearman's ρ {glue:text}`nb02_spearman_text`, Kendall's τ
# {glue:text}`nb02_kendall_text`), and the two computations give
# {glue:text}`nb02_auc_phrase`.

# %% [markdown]
# (sec-exgrad-orientation)=
# ## Which way should ExGrad point?
#
# ExGrad $= 2\lVert h\rVert_1 \sum_k p_k(1-p_k)$ multiplies a feature norm that is larger for ID
# images by a Gini impurity that is larger for *uncertain* — typically OOD — predictions. Read
# like GradNorm ("a larger gradient means in-distribution") or the way its authors score it ("a
# larger gradient means OOD", the flipped reading here), one factor always works against the
# score. For comparison, the Gini term alone in
# both readings: as ExGrad reads it (raw $\sum_k p_k(1-p_k)$, larger = in-distribution) and
# oriented the other way, as the grid's $1 - \text{Gini} = \lVert p\rVert_2^2$ (a constant shift
# of $-\text{Gini}$, so the same ranking):

# %%
ex = auc[["exgrad", "exgrad_flipped", "l1*one", "gini_as_exgrad",
          "one*p_l2sq"]]
mean = ex.loc["mean"]
best = max(mean["exgrad"], mean["exgrad_flipped"])
norm_helps = best >= mean["one*p_l2sq"]  # against the Gini term alone

# %% tags=["remove-cell"]
for key, col in (("exgrad", "exgrad"), ("exgrad_flipped", "exgrad_flipped"),
                 ("gini_alone", "one*p_l2sq"), ("gini_as_exgrad", "gini_as_exgrad")):
    glue(f"nb02_auc_{key}", float(mean[col]))
glue("nb02_exgrad_vs_gini", "beats" if norm_helps else "stays below")
glue("nb02_exgrad_norm", "raises" if norm_helps else "lowers")

# %% tags=["hide-input"]
names = {k: method_label(k) for k in ex.columns}
names["gini_as_exgrad"] = "Σ p(1 − p), as ExGrad reads it"
names["one*p_l2sq"] += " = 1 − Gini"
tables.book_table(
    ex.loc[row_order].rename(index=row_label, columns=names)
    .style.format("{:.1f}")
    .highlight_max(axis=1, props="font-weight: bold"),
    "AUROC (%) of ExGrad in both readings and of its factors alone; "
    "the best of each row in bold. The mean is over the near and far "
    "OOD sets; the covariate-shift rows are apart")

# %% [markdown]
# Mean AUROC: {glue:text}`nb02_auc_exgrad:.1f` in GradNorm's orientation,
# {glue:text}`nb02_auc_exgrad_flipped:.1f` in its authors' orientation, against
# {glue:text}`nb02_auc_gini_alone:.1f` for the oriented Gini term alone
# ($1 - \text{Gini}$; {glue:text}`nb02_auc_gini_as_exgrad:.1f` read as ExGrad reads it). The better
# reading {glue:text}`nb02_exgrad_vs_gini` the oriented Gini term alone, so here the feature norm
# {glue:text}`nb02_exgrad_norm` ExGrad's AUROC.

# %% [markdown]
# ## Summary
#
# * The $U \cdot V$ grid has {glue:text}`nb02_n_grid` members, every factor non-negative,
#   larger = in-distribution and unchanged by a shift of the logits.
# * GradNorm is $U \cdot V$; on {glue:text}`nb02_product_wins` of the {glue:text}`nb02_n_sets` near
#   and far OOD sets the product beats each factor.
# * Autograd and closed form rank the images alike (Spearman's ρ
#   {glue:text}`nb02_spearman_text`), with {glue:text}`nb02_auc_phrase`.
# * ExGrad's factors disagree on the direction: its better reading
#   {glue:text}`nb02_exgrad_vs_gini` the oriented Gini term alone, so the feature norm
#   {glue:text}`nb02_exgrad_norm` ExGrad's AUROC.
