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
# (ch-your-model)=
# # Your model
#
# **Question.** Is GradNorm worth its backward pass on *your* classifier and data, or does a
# gradient-free $U\cdot V$ score do as well? **Answer on {glue:text}`nb05_model`**, per decided
# cell (AUROC, the rules of the {ref}`pre-registration <ch-preregistration>`):
# {glue:text}`nb05_answer` — the first table below says why.
#
# This page is a template: run it on your own model and folders with papermill, and the same
# study — features extracted once and cached, every closed form, the fitted baselines, the paired
# bootstrap and the four-way verdicts — runs there. Built with the book, it studies the embedded
# benchmark's CNN on its own sets.

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
from IPython.display import display

import ood_lib
from ood_lib.book import glue, tables
from ood_lib.data.own import inputs

# %% [markdown]
# **Parameters.** `MODEL` names the architecture (`timm:NAME`, `torchvision:NAME`, `cifar_resnet`,
# …) and `CHECKPOINT` its weights file; with `CHECKPOINT` alone the architecture is read off the
# file. `ID_DIR` holds the ID test images (class sub-folders give labels), `FIT_DIR` ID training
# images for the fitted baselines, and `OOD_DIRS` the OOD folders as `name=DIR` items,
# comma-separated; `name:near=DIR` marks a near set, `name:far-synthetic=DIR` a synthetic one
# (unmarked: far-natural). `SIZE`, `MEAN`, `STD` override the model library's preprocessing
# (0 and empty lists: keep it). All empty: the embedded benchmark. `N_ID`, `N_OOD`, `N_FIT`
# subsample (0: every image); `REPORT` names an HTML file for the one-page report.
#
# ```bash
# .venv/bin/python tools/run_notebook.py \
#     notebooks/05_your_model.py -o mine.ipynb \
#     -p MODEL timm:resnet50 -p CHECKPOINT resnet50.pth \
#     -p ID_DIR /data/val -p FIT_DIR /data/train \
#     -p OOD_DIRS "textures=/data/dtd,ninco:near=/data/ninco" \
#     -p REPORT report.html
# ```

# %% tags=["parameters", "hide-cell"]
MODEL = ""
CHECKPOINT = ""
ID_DIR = ""
OOD_DIRS = ""
FIT_DIR = ""
SIZE = 0
MEAN = []
STD = []
N_ID = 300
N_OOD = 200
N_FIT = 1000
N_BOOT = 1000
DEVICE = "auto"
SEED = 0
REPORT = ""

# %% [markdown]
# ## The study, in one call
#
# `inputs` turns the parameters into a model and data; `ood_lib.study` takes any `nn.Module`
# whose output is one `nn.Linear`'s, and datasets, loaders, tensors or folders. Its answer, per
# decided cell:

# %%
model, id_set, ood_sets, fit_set = inputs(MODEL, CHECKPOINT, ID_DIR, OOD_DIRS, FIT_DIR, seed=SEED)
result = ood_lib.study(model, id_set, ood_sets, fit_set, device=DEVICE, n_boot=N_BOOT, seed=SEED,
                       size=SIZE or None, mean=MEAN or None, std=STD or None,
                       n_id=N_ID or None, n_ood=N_OOD or None, n_fit=N_FIT or None, progress=False)
display(tables.captioned(result.worth_it().set_index("cell"), "Is GradNorm worth it? Per decided cell (AUROC)"))

# %% tags=["remove-cell"]
for key, value in result.numbers().items():
    glue(f"nb05_{key}", value)

# %% [markdown]
# The {glue:text}`nb05_n_sets` OOD sets are scored against {glue:text}`nb05_n_id` ID images.
# The main methods' AUROC per group (per set: `result.performance("auroc")` and the report):

# %%
display(tables.captioned(result.performance("auroc", per_set=False), "AUROC (%) per group of OOD sets", "{:.1f}",
                         best="max"))

# %% [markdown]
# ## The verdicts
#
# Each claim's AUROC difference with its simultaneous interval ({numref}`fig-own-verdicts`); inside
# the shaded band the two scores are equivalent.

# %% tags=["remove-cell"]
glue("nb05_fig_verdicts", result.figures()["verdicts"])
plt.close("all")

# %% [markdown]
# ```{glue:figure} nb05_fig_verdicts
# :name: fig-own-verdicts
# :alt: Horizontal intervals of AUROC differences per claim and OOD group, with a shaded equivalence band around 0.
#
# An interval right of the band supports the claim, left of it refutes it, inside it the two are
# equivalent. GradNorm against MSP and Energy, and the gradient-free ‖h‖₁·MSP and best U·V member against
# GradNorm: AUROC differences (points) with their intervals, per decided cell.
# ```

# %% [markdown]
# ## Why: the mechanism's prediction
#
# The pre-registered mechanism predicts from the features alone that the feature norm helps
# where AUROC(‖h‖₁) exceeds τ = {glue:text}`nb05_tau:.0f`; the prediction agrees with what
# ‖h‖₁·MSP − MSP did on {glue:text}`nb05_mech_agree` of {glue:text}`nb05_n_sets` sets:

# %%
display(tables.captioned(result["mechanism"].set_index("ood").drop(columns=["group", "tau"]),
                         "The mechanism's prediction (helps: AUROC of ‖h‖₁ > τ) and the AUROC gains (points)"))

# %% [markdown]
# GradNorm by autograd through the whole network, one image at a time as published, differs
# from ‖h‖₁‖p − u‖₁ by at most {glue:text}`nb05_identity_worst` V units on
# {glue:text}`nb05_identity_n` images.

# %%
if REPORT:
    result.to_html(REPORT)

# %% [markdown]
# ## Summary
#
# * One call, `ood_lib.study(model, id, ood, fit)`, or one command, `python -m ood_lib study
#   --checkpoint FILE --id DIR --ood NAME=DIR --fit DIR --out report/`, gives the verdicts of the
#   pre-registration on any classifier with a linear head.
# * Here: {glue:text}`nb05_answer_long`.
# * The report (`result.to_html(path)`) is one self-contained page to attach to a paper or a PR.
