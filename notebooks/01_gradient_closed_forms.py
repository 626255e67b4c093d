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
# (ch-closed-forms)=
# # Gradient scores and their closed forms
#
# **Claim.** For the gradient of a loss with respect to a classifier's *last* linear layer, every
# gradient-norm OOD score in use equals a closed form $c \cdot U(h)\,V(p)$: a norm of the
# penultimate features times a function of the softmax output. **Answer on this page's model**
# ({glue:text}`nb01_what`): every one of the {glue:text}`nb01_n_scores` last-layer scores agrees with
# its closed form to {glue:text}`nb01_worst_v:.1e` (in units of $V$), for both the batched and the
# one-image-at-a-time autograd paths. The factorisation stops one layer down: the best constant
# multiple of the closed form misses the gradient norm of {glue:text}`nb01_deeper` by up to
# {glue:text}`nb01_deeper_rel:.0%`, and the input gradient by up to {glue:text}`nb01_input_rel:.0%`.

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from ood_lib import data as D
from ood_lib import plots, tables
from ood_lib.benchmarks import get_benchmark
from ood_lib import reductions as R
from ood_lib.book import glue
from ood_lib.gradients import gradient_score
from ood_lib.labels import method_label
from ood_lib.scores import closed_form
from ood_lib.verify import default_deeper, verify

plt.rcParams.update(plots.BOOK_STYLE)

# %% [markdown]
# **Parameters.** The page runs on the small embedded benchmark by default. To check the
# identities on another model, set `BENCHMARK` (e.g. `"cifar10"`) and `DATA_ROOT` (the folder
# that holds its data); `N_VERIFY` is the number of test images, `N_SHOW` how many of them are
# worked by hand below, and `TEMPERATURE` the softmax temperature $T$.

# %% tags=["parameters", "hide-cell"]
BENCHMARK = "embedded"
DATA_ROOT = ""
SEED = 0
N_VERIFY = 32
N_SHOW = 4
TEMPERATURE = 1.0

# %% [markdown]
# ## The one identity behind every score
#
# Write the classifier as $f(x) = W h(x) + b$ with $W \in \mathbb{R}^{C \times D}$, penultimate
# features $h(x) \in \mathbb{R}^D$ and $p = \operatorname{softmax}(f / T)$. For any target vector
# $q$ over the $C$ classes the cross-entropy $\ell_q = -\sum_k q_k \log p_k$ has
#
# $$
# \frac{\partial \ell_q}{\partial f} = \frac{(\textstyle\sum_k q_k)\,p - q}{T},\qquad
# \frac{\partial \ell_q}{\partial W} = \frac{\partial \ell_q}{\partial f}\, h^\top,\qquad
# \frac{\partial \ell_q}{\partial b} = \frac{\partial \ell_q}{\partial f}.
# $$
#
# The weight gradient is an **outer product** $a h^\top$, and entry-wise norms of an outer product
# split: $\lVert a h^\top \rVert_1 = \lVert a \rVert_1 \lVert h \rVert_1$ and
# $\lVert a h^\top \rVert_F^2 = \lVert a \rVert_2^2 \lVert h \rVert_2^2$. Adding the bias row turns
# $\lVert h \rVert_1$ into $\lVert h \rVert_1 + 1$ and $\lVert h \rVert_2^2$ into $\lVert h \rVert_2^2 + 1$.
# Every score below follows from this and from averaging over the label:
#
# | score | definition | closed form |
# |---|---|---|
# | GradNorm | $\lVert \nabla_W \mathrm{KL}(u \Vert p) \rVert_1$ | $\lVert h \rVert_1 \lVert p - u \rVert_1 / T$ |
# | GradNorm, reference code | all-ones target $q = \mathbf 1$ | $C\, \lVert h \rVert_1 \lVert p - u \rVert_1 / T$ |
# | ExGrad | $\mathbb E_{Y\sim p} \lVert \nabla_W \mathrm{CE}(f, Y) \rVert_1$ | $2 \lVert h \rVert_1 \sum_k p_k (1 - p_k) / T$ |
# | Fisher trace | $\mathbb E_{Y\sim p} \lVert \nabla_W \mathrm{CE}(f, Y) \rVert_2^2$ | $\lVert h \rVert_2^2 (1 - \lVert p \rVert_2^2) / T^2$ |
# | uniform label, L1 | $\mathbb E_{Y\sim u} \lVert \nabla_W \mathrm{CE}(f, Y) \rVert_1$ | $2 \lVert h \rVert_1 (C-1)/(C T)$ |
# | uniform label, L2² | $\mathbb E_{Y\sim u} \lVert \nabla_W \mathrm{CE}(f, Y) \rVert_2^2$ | $\lVert h \rVert_2^2 (1 - 2/C + \lVert p \rVert_2^2) / T^2$ |
# | predicted label | $\lVert \nabla_W \mathrm{CE}(f, \hat y) \rVert_1$ | $2 \lVert h \rVert_1 (1 - \max_k p_k) / T$ |
# | norm of the expected gradient | $\lVert \mathbb E_{Y\sim p} \nabla_W \mathrm{CE}(f, Y) \rVert_1$ | $0$ |
#
# ExGrad's factor comes from $\mathbb E_{Y \sim p}\lVert p - e_Y\rVert_1 = \sum_y p_y \cdot 2(1 - p_y)$,
# the Fisher trace's from $\mathbb E_{Y\sim p}\lVert p - e_Y \rVert_2^2 = 1 - \lVert p \rVert_2^2$, and the
# last row vanishes because $\mathbb E_{Y\sim p}[p - e_Y] = p - p = 0$.

# %% [markdown]
# ## The model and the images
#
# We take the benchmark's trained classifier and a seeded sample of its in-distribution test
# images. Everything below runs in float64, so that any difference larger than rounding error
# would show.

# %%
bench = get_benchmark(BENCHMARK)
root = D.data_root(DATA_ROOT or None)
model = bench.load_model(root, seed=SEED)
split = bench.splits(root, seed=SEED)["id_test"]
x, _ = D.stack_images(split.dataset, N_VERIFY, SEED)
m64 = model.double().eval()
with torch.no_grad():
    h, f = m64.forward_features(x.double())

# %% tags=["remove-cell"]
what = f"{BENCHMARK}: {type(model).__name__}, {len(x)} ID test images"
glue("nb01_what", what, display=False)

# %% [markdown]
# ## GradNorm by hand
#
# Before any library function, the claim on a few images with nothing but autograd. GradNorm's
# loss is $\mathrm{KL}(u \Vert p) = -\log C - \frac1C \sum_k \log p_k$; we differentiate it
# with respect to the head's weight $W$, take the entry-wise $\ell_1$ norm, and put it beside
# the closed form $\lVert h\rVert_1 \lVert p - u\rVert_1 / T$ written out.

# %%
W = m64.head.weight
rows = []
for h_i in h[:N_SHOW]:
    log_p = torch.log_softmax(m64.head(h_i) / TEMPERATURE, dim=0)
    (grad_W,) = torch.autograd.grad(-log_p.mean(), W)  # KL(u‖p) + const
    p = log_p.exp().detach()
    u = torch.full_like(p, 1 / len(p))
    closed = h_i.abs().sum() * (p - u).abs().sum() / TEMPERATURE
    rows.append([grad_W.abs().sum().item(), closed.item()])
by_hand = pd.DataFrame(rows, columns=["autograd", "closed form"])
by_hand["ood_lib"] = closed_form(
    "gradnorm", h[:N_SHOW], f[:N_SHOW], TEMPERATURE).numpy()

# %% tags=["hide-input"]
by_hand["relative difference"] = (
    (by_hand["autograd"] - by_hand["closed form"]).abs()
    / by_hand["closed form"])
by_hand.index.name = "image"
tables.book_table(
    by_hand.style.format("{:.12g}").format(
        "{:.1e}", subset=["relative difference"]),
    "‖∇_W KL(u ‖ p)‖₁ by autograd, and ‖h‖₁ ‖p − u‖₁ / T written out "
    "and from ood_lib.scores.closed_form")

# %% tags=["remove-cell"]
glue("nb01_by_hand_rel", float(by_hand["relative difference"].max()),
     display=False)

# %% [markdown]
# The three columns agree: the largest relative difference is
# {glue:text}`nb01_by_hand_rel:.1e`, rounding error in float64. The rest of the page does the
# same for every gradient score at once.

# %% [markdown]
# ## Every score, autograd against the closed form
#
# `verify` computes every score by autograd *exactly as it is defined* — the loss, its gradient
# with respect to the head, the norm, and for ExGrad an explicit sum over all $C$ labels — and
# holds it against the closed form, once batched over the images (`torch.func.vmap`) and once
# looped, one image at a time. The first table gives the largest difference divided by
# $c\,U(h)$, i.e. measured in units of the bounded $V$ term; the second the relative
# difference. The two differ on very confident predictions: there autograd itself forms
# $p_y - 1$ for the top class and carries a rounding error of order
# $\varepsilon / (1 - \max_k p_k)$ relative to the result, which the closed form (computed from
# the small probabilities directly) does not. The *spread* tests the factorisation without any
# closed form at all: for each one-hot target it divides the gradient norm by
# $\lVert p - e_y \rVert$; if the norm factorises, that ratio is the same for every $y$.

# %%
table = verify(model, x, temperature=TEMPERATURE)
last = table[table.wrt.isin(["W", "W,b"])]
deep = table[~table.wrt.isin(["W", "W,b"])]
deeper = default_deeper(model)

# %% tags=["remove-cell"]
diffs = ["v_diff_vmap", "v_diff_loop"]
worst_v = float(last[diffs].to_numpy().max())
rels = ["rel_diff_vmap", "rel_diff_loop"]
worst_rel = float(last[rels].to_numpy().max())
at = deep.set_index("wrt")
glue("nb01_n_scores", int(last.score.nunique()), display=False)
glue("nb01_worst_v", worst_v, display=False)
glue("nb01_worst_rel", worst_rel, display=False)
glue("nb01_deeper", deeper, display=False)
glue("nb01_deeper_rel", float(at.loc[deeper, "rel_diff_vmap"]),
     display=False)
glue("nb01_input_rel", float(at.loc["input", "rel_diff_vmap"]),
     display=False)
glue("nb01_deeper_spread", float(at.loc[deeper, "spread"]), display=False)
glue("nb01_head_spread", float(last.spread.max()), display=False)
quoted = ("gradnorm", "gradnorm_official", "exgrad", "fisher", "ce_pred")
for name in quoted:
    worst = last.loc[last.score == name, diffs].to_numpy().max()
    glue(f"nb01_v_{name}", float(worst), display=False)

# %% tags=["hide-input"]
order = list(dict.fromkeys(last.score))
heads = {"W": "w.r.t. W", "W,b": "w.r.t. (W, b)"}
paths = {"vmap": "batched", "loop": "looped"}
captions = {
    "v_diff": "Largest |autograd − closed form| over the images, "
              "in units of V",
    "rel_diff": "Largest relative difference "
                "|autograd − closed form| / closed form",
}
for kind, caption in captions.items():
    t = last.pivot(index="score", columns="wrt",
                   values=[f"{kind}_{m}" for m in paths])
    t = t.reindex(order).rename(index=method_label)
    t = t[[(f"{kind}_{m}", w) for w in heads for m in paths]]
    t.columns = pd.MultiIndex.from_tuples(
        [(heads[w], paths[c.rsplit("_", 1)[1]]) for c, w in t.columns])
    t.index.name = None
    display(tables.book_table(t.style.format("{:.1e}"), caption))
below = deep.set_index("wrt").rename(
    index={deeper: f"layer below the head ({deeper})"})
below = below[["rel_diff_vmap", "rel_diff_loop", "spread"]]
below.columns = ["batched", "looped", "target spread"]
below.index.name = "GradNorm w.r.t."
display(tables.book_table(
    below.style.format("{:.2f}"),
    "Below the head: relative difference from the best constant "
    "multiple of the closed form, and the target spread"))

# %% [markdown]
# Over the last layer the largest difference in units of $V$ is {glue:text}`nb01_worst_v:.1e` and
# the largest relative difference {glue:text}`nb01_worst_rel:.1e`; the target spread is at most
# {glue:text}`nb01_head_spread:.1e`. One layer down ({glue:text}`nb01_deeper`) the spread is
# {glue:text}`nb01_deeper_spread:.2f`: the gradient norm depends on *which* label is used in a way
# that no function of $h$ alone can absorb.

# %% [markdown]
# ## Where the simplification stops
#
# The figure puts the gradient norm of the head, of the layer below it and of the input (ODIN's
# perturbation direction) against GradNorm's closed form, each scaled by its best constant. On
# the head the points lie on the diagonal; below it they scatter.

# %%
cf = closed_form("gradnorm", h, f, TEMPERATURE).numpy()
norms = {
    wrt: gradient_score("gradnorm", m64, x.double(), wrt=wrt,
                        temperature=TEMPERATURE).numpy()
    for wrt in ("head", deeper, "input")
}

# %% tags=["hide-input"]
names = {"head": "last layer (head)", deeper: f"layer below ({deeper})",
         "input": "input"}
fig = plots.gradient_vs_closed_form(
    cf, {names[w]: g for w, g in norms.items()}, "‖h‖₁ ‖p − u‖₁ / T")
glue("nb01_fig_deeper", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} nb01_fig_deeper
# :name: fig-deeper
# :figwidth: 75%
#
# GradNorm's gradient norm against its last-layer closed form, for the head (on the diagonal), the
# layer below and the input (scattered).
# ```

# %% [markdown]
# ## The V terms over the probability simplex
#
# {numref}`fig-simplex` draws the output terms of the $U\cdot V$ grid ({ref}`ch-factors`) over the
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
# and {ref}`ch-factors` measures what each reading does.

# %% tags=["hide-input"]
terms = ["msp", "pu_l1", "p_l2sq", "kl_u", "maxlogit_gap", "lse_gap"]
fig = plots.simplex_figure(terms)
glue("nb01_fig_simplex", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} nb01_fig_simplex
# :name: fig-simplex
#
# The grid's V terms over the 3-class probability simplex (corners: one-hot predictions; centre:
# uniform), each drawn as defined, $T = 1$. Every panel is larger towards the corners.
# ```

# %% [markdown]
# ## Newer gradient detectors reduce the same way
#
# Detectors published after the paper reuse the last-layer gradient in new guises, and the same
# outer-product structure gives each a closed form without a backward pass. GradOrth
# {cite}`behpour2023gradorth` projects GradNorm's gradient onto the principal subspace $S_k$ of
# ID features: $\lVert (p-u)h^\top S_kS_k^\top\rVert_F/T = \lVert p-u\rVert_2\,
# \lVert S_k^\top h\rVert_2/T$, a $U\cdot V$ product whose $U$ is the norm of $h$ *inside*
# the ID subspace. The K-FAC natural-gradient norm $g^\top (A\otimes G)^{-1} g$ with
# $g = \operatorname{vec}((p-u)h^\top)/T$ is $(h^\top A^{-1}h)\cdot((p-u)^\top G^{-1}(p-u))/T^2$:
# a Mahalanobis-type feature term times an output term, which makes GradNorm and Mahalanobis two
# readings of one product. Both by autograd, as defined, against their closed forms (the subspace
# and the factors are fitted here on the same images; the identities hold for any fit):

# %%
head = m64.head
basis = R.gradorth_subspace(h)
factors = R.kfac_factors(h, f)
pairs = {
    "GradOrth": (R.gradorth_autograd(head, h, basis),
                 R.gradorth_closed_form(h, f, basis)),
    "K-FAC natural gradient": (R.kfac_autograd(head, h, factors),
                               R.kfac_closed_form(h, f, factors)),
}
worst = {k: float(((a - c).abs() / c.abs()).max())
         for k, (a, c) in pairs.items()}
newer = pd.Series(worst, name="max relative difference")
newer.to_frame().style.format("{:.1e}")

# %% tags=["remove-cell"]
glue("nb01_newer_worst", float(newer.max()), display=False)

# %% [markdown]
# Both agree to {glue:text}`nb01_newer_worst:.1e`. GAIA {cite}`chen2023gaia` is different in kind:
# it aggregates gradient statistics over the channels of *inner* layers, so only its last-layer
# part has a closed form; the library evaluates it on request (`gaia`, `gaia_last`), since it reads
# every layer of the network again.

# %% [markdown]
# ## Summary
#
# * Each last-layer gradient score is $c\,U(h)\,V(p)$ exactly; the check above leaves differences
#   of {glue:text}`nb01_worst_v:.1e` in units of $V$.
# * The official GradNorm code's score is $C$ times the KL form — the same ranking.
# * Gradients of deeper layers and of the input do not factorise: that is where a gradient score
#   could carry information the closed forms lack, and what {ref}`ch-evaluation` puts to the test.
