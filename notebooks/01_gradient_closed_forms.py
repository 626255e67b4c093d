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
# ({glue:text}`nb01_model`, {glue:text}`nb01_n_images` ID test images): every one of the {glue:text}`nb01_n_scores` last-layer scores agrees with
# its closed form to {glue:text}`nb01_worst_v:.1e` (in units of $V$), for both the batched and the
# one-image-at-a-time autograd paths. Every linear layer's gradient norm is a product too (here
# {glue:text}`nb01_linear_layers`, to {glue:text}`nb01_linear_worst:.1e`), the last convolution
# before global average pooling a sum of per-channel products; the other convolutions' per-sample
# gradients are far from one outer product (median rank-one residual
# {glue:text}`nb01_rank_open_lo:.2f` to {glue:text}`nb01_rank_open_hi:.2f`), so their norms have to
# be computed — what they add is measured in {ref}`sec-depth`.

# %% tags=["remove-cell"]
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from ood_lib import OODInputError
from ood_lib import data as D
from ood_lib.book import glue, plots, tables
from ood_lib.book.layer_plots import rank_one_figure
from ood_lib.data.benchmarks import get_benchmark
from ood_lib.detectors.model_access import log_msp_and_input_gradient, odin_perturb
from ood_lib.findings.labels import method_label, model_name
from ood_lib.gradients import reductions as R
from ood_lib.gradients.gaia import gaia_autograd, gaia_last_closed_form, gap_map
from ood_lib.gradients.layers import NORMS, gap_conv_closed_form, last_conv_name, layer_grad_norms, linear_closed_form
from ood_lib.gradients.rank import rank_one_residual
from ood_lib.gradients.signals import channel_std
from ood_lib.gradients.verify import gaia_last_module, max_rel_diff, recorded_layer_rows, verify
from ood_lib.scores import closed_form

plt.rcParams.update(plots.BOOK_STYLE)

# %% [markdown]
# **Parameters.** The page runs on the small embedded benchmark by default. To check the
# identities on another model, set `BENCHMARK` (e.g. `"cifar10"`) and `DATA_ROOT` (the folder
# that holds its data); `N_VERIFY` is the number of test images, `N_SHOW` how many of them are
# worked by hand below, `TEMPERATURE` the softmax temperature $T$ of the gradient scores, and
# `ODIN_TEMPERATURE`, `ODIN_EPSILON` ODIN's $T$ and step size (in pixel units, pixels in $[0, 1]$).

# %% tags=["parameters", "hide-cell"]
BENCHMARK = "embedded"
DATA_ROOT = ""
SEED = 0
N_VERIFY = 32
N_SHOW = 4
TEMPERATURE = 1.0
ODIN_TEMPERATURE = 1000.0
ODIN_EPSILON = 0.0014

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
# | GradNorm (all-ones target) | all-ones target $q = \mathbf 1$ | $C\, \lVert h \rVert_1 \lVert p - u \rVert_1 / T$ |
# | ExGrad | $\mathbb E_{Y\sim p} \lVert \nabla_W \mathrm{CE}(f, Y) \rVert_1$ | $2 \lVert h \rVert_1 \sum_k p_k (1 - p_k) / T$ |
# | Fisher trace | $\mathbb E_{Y\sim p} \lVert \nabla_W \mathrm{CE}(f, Y) \rVert_2^2$ | $\lVert h \rVert_2^2 (1 - \lVert p \rVert_2^2) / T^2$ |
# | Uniform-label ℓ₁ | $\mathbb E_{Y\sim u} \lVert \nabla_W \mathrm{CE}(f, Y) \rVert_1$ | $2 \lVert h \rVert_1 (C-1)/(C T)$ |
# | Uniform-label ℓ₂² | $\mathbb E_{Y\sim u} \lVert \nabla_W \mathrm{CE}(f, Y) \rVert_2^2$ | $\lVert h \rVert_2^2 (1 - 2/C + \lVert p \rVert_2^2) / T^2$ |
# | Predicted-label CE | $\lVert \nabla_W \mathrm{CE}(f, \hat y) \rVert_1$ | $2 \lVert h \rVert_1 (1 - \max_k p_k) / T$ |
# | Mean gradient | $\lVert \mathbb E_{Y\sim p} \nabla_W \mathrm{CE}(f, Y) \rVert_1$ | $0$ |
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
m64, x64 = model.double().eval(), x.double()
with torch.no_grad():
    h, f = m64.forward_features(x64)

# %% tags=["remove-cell"]
glue("nb01_model", f"{model_name(BENCHMARK)} on {split.name.split(' (')[0]}")
glue("nb01_n_images", len(x))

# %% [markdown]
# ## GradNorm by hand
#
# Before any library function, the claim on a few images with nothing but autograd. GradNorm's
# loss is $\mathrm{KL}(u \Vert p) = -\log C - \frac1C \sum_k \log p_k$; we differentiate it
# with respect to the head's weight $W$, take the entry-wise $\ell_1$ norm, and put it beside
# the closed form $\lVert h\rVert_1 \lVert p - u\rVert_1 / T$ written out:

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
by_hand["library"] = closed_form(
    "gradnorm", h[:N_SHOW], f[:N_SHOW], TEMPERATURE).numpy()

# %% tags=["hide-input"]
by_hand["relative difference"] = (
    (by_hand["autograd"] - by_hand["closed form"]).abs()
    / by_hand["closed form"])
by_hand.index.name = "image"
tables.book_table(
    by_hand.style.format("{:.12g}").format(
        "{:.1e}", subset=["relative difference"]),
    f"GradNorm on the first {N_SHOW} images: the ℓ₁ norm of the head "
    "weight's gradient of KL(u ‖ p) by autograd, and the closed form "
    "‖h‖₁ · ‖p − u‖₁ / T written out and as the library computes it")

# %% tags=["remove-cell"]
glue("nb01_by_hand_rel", float(by_hand["relative difference"].max()))

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
# $\lVert p - e_y \rVert$; if the norm factorises, that ratio is the same for every $y$. The largest
# differences over the images:

# %%
table = verify(model, x, temperature=TEMPERATURE, deeper=[])
last = table[table.wrt.isin(["W", "W,b"])]
# the largest difference over images, paths and heads: per score in units of V, and relative
# (a closed form of 0, the mean gradient's, has no relative difference)
worst_v = last.groupby("score")[["v_diff_vmap", "v_diff_loop"]].max().max(axis=1)
zero = last.closed_form.astype(str) == "0"
worst_rel = last.loc[~zero, ["rel_diff_vmap", "rel_diff_loop"]].to_numpy().max()

# %% tags=["remove-cell"]
for key, value in {"n_scores": len(worst_v), "worst_v": worst_v.max(), "worst_rel": worst_rel,
                   "head_spread": last.spread.max(),
                   **{f"v_{n}": worst_v[n] for n in ("gradnorm", "gradnorm_official", "exgrad", "fisher", "ce_pred")}
                   }.items():
    glue(f"nb01_{key}", value.item() if hasattr(value, "item") else value)

# %% tags=["hide-input"]
order = list(dict.fromkeys(last.score))
heads = {"W": "w.r.t. W", "W,b": "w.r.t. (W, b)"}
paths = {"vmap": "batched", "loop": "looped"}
zero_names = ", ".join(method_label(n) for n in last.score[zero].unique())
captions = {
    "v_diff": "Largest difference between autograd and the closed form "
              "over the images, in units of the output term V",
    "rel_diff": "Largest difference between autograd and the closed form "
                "over the images, relative to the closed form"
                + (f"; — where the closed form is 0 ({zero_names}): "
                   "its difference is in the table above"
                   if zero.any() else ""),
}
for kind, caption in captions.items():
    vals = last.copy()
    if kind == "rel_diff":  # undefined where the closed form is 0
        vals.loc[zero, [f"{kind}_{m}" for m in paths]] = float("nan")
    t = vals.pivot(index="score", columns="wrt",
                   values=[f"{kind}_{m}" for m in paths])
    t = t.reindex(order).rename(index=method_label)
    t = t[[(f"{kind}_{m}", w) for w in heads for m in paths]]
    t.columns = pd.MultiIndex.from_tuples(
        [(heads[w], paths[c.rsplit("_", 1)[1]]) for c, w in t.columns])
    t.index.name = None
    display(tables.book_table(
        t.style.format("{:.1e}", na_rep="—"), caption))

# %% [markdown]
# Over the last layer the largest difference in units of $V$ is {glue:text}`nb01_worst_v:.1e` and
# the largest relative difference {glue:text}`nb01_worst_rel:.1e` (on the scores whose closed form
# is not 0); the target spread is at most
# {glue:text}`nb01_head_spread:.1e`. The squared-$\ell_2$ ExGrad,
# $\mathbb E_{Y\sim p}\lVert\nabla_W \mathrm{CE}(f, Y)\rVert_2^2$, is the Fisher trace row.

# %% [markdown]
# (sec-below-head)=
# ## Below the head: the outer product in every linear layer
#
# The identity above uses nothing about the head except that it is a linear layer. Any
# `nn.Linear` layer $y = W a + b$, wherever it sits, has the per-sample gradient
# $\nabla_W \ell = \delta\, a^\top$ with $\delta = \partial \ell / \partial y$, so
#
# $$
# \lVert \nabla_W \ell \rVert_1 = \lVert \delta \rVert_1 \lVert a \rVert_1, \qquad
# \lVert \nabla_W \ell \rVert_F^2 = \lVert \delta \rVert_2^2 \lVert a \rVert_2^2 .
# $$
#
# At the head $\delta = (p - q)/T$ and $a = h$. Below it, $\delta$ is that vector carried back
# through the layers above: for a linear layer just under the head whose ReLU gives $h$,
# $\delta = \mathbb 1[h > 0] \odot W_{\text{head}}^\top (p - q)/T$. Still no per-sample backward
# pass is needed — one batched backward of the summed loss gives every image's $\delta$ at once,
# since in eval mode the images do not interact — but the output factor $\lVert\delta\rVert$ now
# depends on the ReLU mask and the head's weights, not on $p$ alone.
#
# **The last convolution before global average pooling** has a closed form too, a sum of
# $C_{\text{out}}$ products $\sum_c |g_c|\,\lVert \bar a_c\rVert_1$ rather than one:
#
# :::{dropdown} Why: the derivation
# Let $z = \operatorname{conv}(a)$ have
# $C_{\text{out}}$ channels over $S$ positions, followed only by per-channel affine maps
# (eval-mode BatchNorm with scale $s_c$), residual additions, one ReLU with mask $m_{c,\sigma}$,
# the mean over positions and the head. Then $\delta_{c,\sigma} = g_c\, m_{c,\sigma}/S$ with
# $g = s \odot W_{\text{head}}^\top (p - q)/T$: spatially constant up to the mask. Row $c$ of
# $\nabla_W \ell = \sum_\sigma \delta_\sigma A_\sigma^\top$ ($A_\sigma$ the input patch at position
# $\sigma$) is $g_c\, \bar a_c^\top$, with $\bar a_c = \frac1S \sum_{\sigma:\, m_{c,\sigma} = 1}
# A_\sigma$ the patches summed over the channel's active positions, so
#
# $$
# \lVert \nabla_W \ell \rVert_1 = \sum_c |g_c|\, \lVert \bar a_c \rVert_1, \qquad
# \lVert \nabla_W \ell \rVert_F^2 = \sum_c g_c^2\, \lVert \bar a_c \rVert_2^2 .
# $$
#
# What survives is a *sum* of $C_{\text{out}}$ products, each an output-side number $g_c$ times an
# input-side norm $\lVert \bar a_c\rVert$. It is not one product $U(x)\,V(p)$: that would need every
# channel to see the same mean patch $\bar a_c$, i.e. no ReLU mask. It still needs no per-sample
# backward pass; each further loss target costs one $C_{\text{out}}$-vector $g$.
# :::
#
# Both forms against the reference — `loss.backward()` through the whole network, one image at a
# time — for GradNorm's loss, in float64:

# %%
# loss.backward(), one image at a time
auto = layer_grad_norms(m64, x64, method="loop")
# every nn.Linear: ‖δ‖ ‖a‖
forms = {"δ aᵀ (linear)": linear_closed_form(m64, x64)}
# Σ_c |g_c| ‖ā_c‖, where global average pooling follows the last conv
conv = last_conv_name(m64, x64)
try:
    forms["Σ_c g_c ā_cᵀ (conv)"] = gap_conv_closed_form(m64, x64, conv=conv)
except OODInputError as why:  # its premise fails here: say which check
    print(textwrap.fill(f"no closed form for {conv}: {why}", 76))
below = pd.DataFrame([
    {"closed form": form, "tensor": n,
     **{nm: max_rel_diff(c[nm][n], auto[nm][n]) for nm in NORMS}}
    for form, c in forms.items() for n in c["l1"]])

# %% tags=["hide-input"]
order = list(dict(m64.named_parameters()))
shown = (below.sort_values("tensor", key=lambda t: t.map(order.index))
         .set_index(["closed form", "tensor"])
         .rename(columns={"l1": "‖∇‖₁", "l2sq": "‖∇‖₂²"}))
tables.book_table(
    shown.style.format("{:.1e}"),
    "Largest relative difference over the images between the closed form "
    "and the batch-1 autograd loop, for every parameter tensor that has "
    "a closed form")

# %% [markdown]
# The linear layers, their worst agreement, and whether the last convolution has the second form;
# the same form on the pretrained CIFAR networks, from the float64 checks of every layer recorded
# on a GPU (`results/device/`):

# %%
linear = below[below["closed form"].str.endswith("(linear)")]
modules = [n for n, _ in m64.named_modules()]
lin_modules = sorted({n.rsplit(".", 1)[0] for n in linear.tensor}, key=modules.index)
gap_rows = below[below["closed form"].str.endswith("(conv)")]
rec = recorded_layer_rows("../results/device")
rec = rec[rec.closed_form.fillna("").str.startswith("conv")]

# %% tags=["remove-cell"]
for key, value in {"linear_layers": ", ".join(lin_modules), "linear_worst": linear[list(NORMS)].to_numpy().max(),
                   "gap_conv": conv, "gap_is": "is" if len(gap_rows) else "is not",
                   "gap_recorded_models": " and ".join(map(model_name, dict.fromkeys(rec.name))),
                   "gap_recorded_worst": rec.rel_diff_closed.max()}.items():
    glue(f"nb01_{key}", value.item() if hasattr(value, "item") else value)

# %% [markdown]
# On this page's model the linear layers are {glue:text}`nb01_linear_layers`; their closed forms
# match autograd to {glue:text}`nb01_linear_worst:.1e`. The last convolution, {glue:text}`nb01_gap_conv`,
# {glue:text}`nb01_gap_is` followed by global average pooling: where it is, the table above checks
# its form (the rows "Σ_c g_c ā_cᵀ (conv)"); where it is not, the signal back-propagated into it
# varies over positions beyond the ReLU mask (the check printed above says which), and the second
# form does not apply. On the CIFAR ResNet-20 and DenseNet-BC-100 the last convolution is followed
# by global average pooling, and the form applies: in the recorded float64 checks of every layer
# of {glue:text}`nb01_gap_recorded_models`, it matches autograd to
# {glue:text}`nb01_gap_recorded_worst:.1e`. (With `BENCHMARK = "cifar10"` above, the page checks
# both forms there itself.)

# %% [markdown]
# (sec-where-it-stops)=
# ## Where the factorisation stops
#
# Every other convolution shares its weights across positions, and its per-sample gradient is a
# sum over positions, $G = \nabla_W \ell = \sum_\sigma \delta_\sigma A_\sigma^\top$, of rank up to
# $\min(C_{\text{out}}, C_{\text{in}} k_h k_w, S)$. Its entry-wise norm is one product of an
# output-side and an input-side norm when $G$ is one outer product, and not otherwise. How far
# each layer is from that we measure by the relative residual of the best rank-one approximation of
# $G$, reshaped to $C_{\text{out}} \times C_{\text{in}} k_h k_w$ (singular values $\sigma_i$):
#
# $$
# r(G) = \frac{\lVert G - \sigma_1 u_1 v_1^\top \rVert_F}{\lVert G \rVert_F}
#      = \Bigl(\sum_{i \ge 2} \sigma_i^2 \Big/ \sum_i \sigma_i^2\Bigr)^{1/2} .
# $$
#
# $r = 0$ for one outer product (up to rounding); $r$ near 1 when no single direction carries
# the gradient. $G$ comes from autograd itself (`torch.func.vmap` of `grad`), not from any
# layer formula.

# %%
# {weight: r(∇_W ℓ) per image}, for GradNorm's loss
residual = rank_one_residual(m64, x64)

# %% tags=["hide-input"]
form_of = {n: form.rsplit("(", 1)[1].rstrip(")")
           for form, c in forms.items() for n in c["l1"] if n in residual}
labels_of = {"linear": "δ aᵀ: one product",
             "conv": "Σ_c over channels: a sum of products"}
head_w = next(n for n, w in m64.named_parameters()
              if w is m64.head.weight)
fig = rank_one_figure(
    residual, {n: labels_of[k] for n, k in form_of.items()},
    head=head_w if head_w in residual else None)
glue("nb01_fig_rank", fig)
plt.close(fig)

# %% [markdown]
# The median residual of each convolution without a closed form, and the largest of the linear
# layers:

# %%
median = pd.Series({n: float(r.median()) for n, r in residual.items()})
open_convs = median.drop(list(form_of))
worst_linear = max(residual[n].max() for n, k in form_of.items() if k == "linear")

# %% tags=["remove-cell"]
for key, value in {"rank_linear": float(worst_linear), "n_open": len(open_convs),
                   "rank_open_lo": open_convs.min(), "rank_open_hi": open_convs.max(),
                   "n_gap_weights": sum(k == "conv" for k in form_of.values())}.items():
    glue(f"nb01_{key}", value.item() if hasattr(value, "item") else value)

# %% [markdown]
# ```{glue:figure} nb01_fig_rank
# :name: fig-rank-one
# :alt: Dots per image and median bars of the rank-one residual of each weight tensor's per-sample gradient, from the input side to the head, coloured by the closed form the layer has.
#
# Only the linear layers' gradients are one outer product (residual near 0); the convolutions'
# are far from it. Rank-one residual $r$ of each image's per-sample weight gradient (dots; bars: medians), per
# weight tensor from the input side to the head, for GradNorm's loss on the
# {glue:text}`nb01_model` ({glue:text}`nb01_n_images` ID test images). Colour: which closed form
# the layer's gradient norm has.
# ```
#
# In {numref}`fig-rank-one` the linear layers sit at $r \le$ {glue:text}`nb01_rank_linear:.0e`: one
# outer product up to rounding. The {glue:text}`nb01_n_open` convolutions without a closed form have median residuals
# between {glue:text}`nb01_rank_open_lo:.2f` and {glue:text}`nb01_rank_open_hi:.2f`: much of their
# gradient lies outside any single outer product, so its $\ell_1$ norm is not a product of an
# output-side and an input-side norm and has to be computed from the per-sample gradient (its
# squared Frobenius norm can be had from the $\delta_\sigma$ and $A_\sigma$ without forming $G$,
# $\sum_{\sigma,\tau} (\delta_\sigma\cdot\delta_\tau)(A_\sigma\cdot A_\tau)$, but that still takes
# the backward pass). A last convolution with a closed form gets a colour of its own in the figure
# (weight tensors with that form on this model: {glue:text}`nb01_n_gap_weights`): its form is a
# sum of per-channel products, not one product, so its residual need not be small. A residual says nothing about
# whether such a norm helps to detect OOD inputs: {ref}`sec-depth` measures that, block by block,
# against the last-layer closed form and the best forward-only score.

# %% [markdown]
# ## The input gradient and ODIN
#
# The input has no weight, so there is no outer product to split: $\nabla_x \ell$ runs through
# the Jacobian of the whole network. The input gradient the literature uses is ODIN's
# {cite}`liang2018odin`. ODIN moves every pixel by $\varepsilon$ in the direction that raises the
# temperature-scaled maximum softmax $S_T(x) = \max_k \operatorname{softmax}(f(x)/T)_k$ at
# $T =$ {glue:text}`nb01_odin_t:.0f`: $\tilde x = x - \varepsilon \operatorname{sign}(-\nabla_x
# \log S_T(x))$ in pixel units, i.e. divided by the normalisation's std in the model's input
# space. To first order the step raises $\log S_T$ by $\varepsilon \lVert \nabla_{\text{pixel}}
# \log S_T \rVert_1$ — an input-gradient norm, which no closed form gives. On the page's images:

# %%
T, eps = ODIN_TEMPERATURE, ODIN_EPSILON
# x = (pixel − mean) / std
std = channel_std(bench.preprocessing.std, x64.shape[1], x64)
# log S_T and ∇ₓ log S_T
log_s, g = log_msp_and_input_gradient(m64, x64, T)
# first order: ε ‖∇_pixel log S_T‖₁
predicted = eps * (g / std).flatten(1).abs().sum(1)
with torch.no_grad():  # the step: x − ε sign(−∇ₓ log S_T) / std
    x_odin = odin_perturb(x64, g, eps, std)
    log_s_odin = torch.log_softmax(m64(x_odin) / T, 1).amax(1)
rise_ratio = (log_s_odin - log_s) / predicted  # actual / first-order
# GradNorm's loss KL(u‖p) + const at T = 1, for comparison
x_in = x64.clone().requires_grad_(True)
kl = -torch.log_softmax(m64(x_in), 1).mean(1).sum()
(g_kl,) = torch.autograd.grad(kl, x_in)
cosine = torch.cosine_similarity(
    (g / std).flatten(1), (g_kl / std).flatten(1))

# %% tags=["remove-cell"]
for key, value in {"t": ODIN_TEMPERATURE, "eps": ODIN_EPSILON, "ratio_med": rise_ratio.median(),
                   "ratio_lo": rise_ratio.min(), "ratio_hi": rise_ratio.max(),
                   "cos_med": cosine.median(), "cos_min": cosine.min()}.items():
    glue(f"nb01_odin_{key}", float(value))

# %% [markdown]
# With $\varepsilon =$ {glue:text}`nb01_odin_eps:.4f`, the actual rise of $\log S_T$ is
# {glue:text}`nb01_odin_ratio_med:.2f` of the first-order prediction (median; from
# {glue:text}`nb01_odin_ratio_lo:.2f` to {glue:text}`nb01_odin_ratio_hi:.2f`). ODIN's direction is
# not, in general, the input gradient of GradNorm's loss at $T = 1$, but on these images it is
# close: their cosine similarity (in pixel units) has median {glue:text}`nb01_odin_cos_med:.3f` and
# minimum {glue:text}`nb01_odin_cos_min:.2f`.
#
# :::{dropdown} Why the two directions are close
# For a large $T$,
# $\log S_T = (\max_k f_k - \operatorname{mean}_k f_k)/T - \log C + O(T^{-2})$, and for a confident
# prediction ($p$ near a one-hot vector) $\nabla_x \mathrm{KL}(u \Vert p) \approx
# \nabla_x(\max_k f_k - \operatorname{mean}_k f_k)$; the two differ where the prediction is
# uncertain.
# :::
#
# How much of ODIN's gain over the unperturbed $S_T$ on OOD data this first-order term explains is
# measured in {ref}`sec-odin-first-order`.

# %% [markdown]
# ## Newer gradient detectors reduce the same way
#
# Detectors published after the paper reuse the last-layer gradient in new guises, and the same
# outer-product structure gives each a closed form without a backward pass.
# GradOrth, a K-FAC natural gradient, the gradient uncertainty of {cite:t}`oberdiek2018gradient`
# and GAIA's last-layer term are each a feature term times an output term:
#
# :::{dropdown} The closed forms
# GradOrth
# {cite}`behpour2023gradorth` projects GradNorm's gradient onto the principal subspace $S_k$ of
# ID features: $\lVert (p-u)h^\top S_kS_k^\top\rVert_F/T = \lVert p-u\rVert_2\,
# \lVert S_k^\top h\rVert_2/T$, a $U\cdot V$ product whose $U$ is the norm of $h$ *inside*
# the ID subspace. The K-FAC natural-gradient norm $g^\top (A\otimes G)^{-1} g$ with
# $g = \operatorname{vec}((p-u)h^\top)/T$ is $(h^\top A^{-1}h)\cdot((p-u)^\top G^{-1}(p-u))/T^2$:
# a Mahalanobis-type feature term times an output term, which makes GradNorm and Mahalanobis two
# readings of one product. The gradient uncertainty of {cite:t}`oberdiek2018gradient`
# aggregates the entries of $\nabla_W \mathrm{CE}(f, \hat y) = (p - e_{\hat y})h^\top$,
# $\hat y = \arg\max_k p_k$: its $\ell_2$ norm is $\lVert h\rVert_2 \lVert p - e_{\hat y}\rVert_2$,
# and its largest entry is the largest of the four products of
# $\{\max_{j\ne\hat y} p_j,\ -(1-\max_k p_k)\}$ and $\{\max_d h_d,\ \min_d h_d\}$ (a product of two
# vectors' entries is extreme at their extremes). GAIA {cite}`chen2023gaia` reads the gradients of
# the output with respect to inner feature maps; at the last map $A$ before the pooling its
# abnormality is $\sum_c \rho_c^2 / (S\,\lVert W^\top(1 - C p)\rVert_1)$ (GAIA-A) and
# $\operatorname{mean}_c (\rho_c\, \mathbb 1[W_{\hat y, c} \ne 0])^2$ (GAIA-Z), with $\rho_c$ the
# share of positions where channel $c$ of $A$ is non-zero — activation density, head weights and
# $p$, from one forward pass.
# :::
#
# Each by autograd, as defined, against its closed form (the subspace
# and the factors are fitted here on the same images; the identities hold for any fit; GAIA's
# last term hooks the last BatchNorm, or on a network without one the layer whose ReLU gives $h$):

# %%
head = m64.head
basis = R.gradorth_subspace(h)
factors = R.kfac_factors(h, f)
# the last map before the pooling, one forward pass
a_map, f_map = gap_map(m64, x64)
hooked = gaia_last_module(m64, x64)
pairs = {
    "gradorth": (R.gradorth_autograd(head, h, basis),
                 R.gradorth_closed_form(h, f, basis)),
    "kfac_natgrad": (R.kfac_autograd(head, h, factors),
                     R.kfac_closed_form(h, f, factors)),
    **{f"gradunc_{agg}": (R.grad_uncertainty_autograd(head, h, agg),
                          R.grad_uncertainty_closed_form(h, f, agg))
       for agg in ("l2", "max")},
    **{name: (
        gaia_autograd(m64, x64, v, modules=[hooked]),
        gaia_last_closed_form(a_map, f_map, head.weight.detach(), v))
       for v, name in (("a", "gaia_last"), ("z", "gaia_z_last"))},
}
worst = {k: max_rel_diff(a, c) for k, (a, c) in pairs.items()}

# %% tags=["hide-input"]
newer = pd.Series(worst, name="max relative difference")
tables.book_table(
    newer.rename(index=method_label).to_frame().style.format("{:.1e}"),
    "Largest difference between autograd and the closed form over the "
    "images, relative to the closed form")

# %% [markdown]
# Two rows need a second look. The K-FAC one is set against the conditioning of the fitted factors
# ($A^{-1}$, $G^{-1}$ have that of $A$, $G$) and checked again with 100 times the damping; the
# gradient-uncertainty $\ell_2$ one is measured in units of $\lVert h\rVert_2$ as well, beside
# the smallest $1 - \max_k p_k$ over the images:

# %%
kappa_a, kappa_g = (float(torch.linalg.cond(m)) for m in (factors.a_inv, factors.g_inv))
damped = R.kfac_factors(h, f, damping=100 * 1e-3)  # 100× the default
kfac_damped = max_rel_diff(R.kfac_autograd(head, h, damped), R.kfac_closed_form(h, f, damped))
kappa_damped = float(torch.linalg.cond(damped.a_inv) * torch.linalg.cond(damped.g_inv))
a_gu, c_gu = pairs["gradunc_l2"]
gradunc_units = float(((a_gu - c_gu).abs() / h.norm(dim=1)).max())
min_miss = float((1 - torch.softmax(f, 1).amax(1)).min())

# %% tags=["remove-cell"]
rest = [k for k in worst if k not in ("kfac_natgrad", "gradunc_l2")]
for key, value in {"newer_worst_name": method_label(max(worst, key=worst.get)),
                   "newer_worst": max(worst.values()), "newer_rest": max(worst[k] for k in rest),
                   "kfac_rel": worst["kfac_natgrad"], "kappa_a": kappa_a, "kappa_g": kappa_g,
                   "kfac_bound": torch.finfo(torch.float64).eps * kappa_a * kappa_g,
                   "kfac_damped": kfac_damped, "kappa_damped": kappa_damped,
                   "gradunc_rel": worst["gradunc_l2"], "gradunc_units": gradunc_units,
                   "min_miss": min_miss}.items():
    glue(f"nb01_{key}", value.item() if hasattr(value, "item") else value)

# %% [markdown]
# The largest difference is the {glue:text}`nb01_newer_worst_name` row's
# {glue:text}`nb01_newer_worst:.1e`; apart from the K-FAC and the gradient-uncertainty $\ell_2$
# rows, every row agrees to {glue:text}`nb01_newer_rest:.1e`.
#
# :::{dropdown} Why the K-FAC and gradient-uncertainty rows differ more
# The K-FAC difference
# ({glue:text}`nb01_kfac_rel:.1e`) is the conditioning of the fitted factors, not the identity:
# both sides use the same inverses $A^{-1}$ and $G^{-1}$ (fitted and inverted in float64), but sum
# the quadratic forms in a different order, and rounding in a quadratic form is amplified by up to
# the matrix's condition number — here $\kappa(A) =$ {glue:text}`nb01_kappa_a:.1e` and
# $\kappa(G) =$ {glue:text}`nb01_kappa_g:.1e`, so $\varepsilon\,\kappa(A)\,\kappa(G) =$
# {glue:text}`nb01_kfac_bound:.1e` bounds what rounding can do. With 100 times the damping
# ($\kappa(A)\,\kappa(G) =$ {glue:text}`nb01_kappa_damped:.1e`) the difference is
# {glue:text}`nb01_kfac_damped:.1e`. The gradient-uncertainty $\ell_2$ row's
# {glue:text}`nb01_gradunc_rel:.1e` is autograd's own rounding, as in the predicted-label rows
# further up: it is large relative to the result only where $1 - \max_k p_k$ is tiny (on the most
# confident image {glue:text}`nb01_min_miss:.0e`), since autograd forms $p_{\hat y} - 1$; measured
# in units of $\lVert h\rVert_2$ (the output factor is at most $\sqrt 2$) the difference is
# {glue:text}`nb01_gradunc_units:.1e`. GAIA itself averages such terms over the channels of
# *every* hooked layer, and the terms of the earlier layers have no closed form — they need the
# backward pass through the network; what that aggregation adds to detection is measured in
# {ref}`ch-depth`.
# :::

# %% [markdown]
# ## Summary
#
# * Each last-layer gradient score is $c\,U(h)\,V(p)$ exactly (to {glue:text}`nb01_worst_v:.1e` in
#   units of $V$), and so are GradOrth, the K-FAC natural-gradient norm, the gradient uncertainty
#   and GAIA's last-layer term; the official GradNorm code's score is $C$ times the KL form.
# * Below the head, every linear layer keeps a product $\lVert\delta\rVert\,\lVert a\rVert$ and
#   the last convolution before global average pooling a sum of per-channel products; the other
#   convolutions (median rank-one residual {glue:text}`nb01_rank_open_lo:.2f` to
#   {glue:text}`nb01_rank_open_hi:.2f`) and ODIN's input step need the backward pass —
#   {ref}`ch-depth` measures what they add.
