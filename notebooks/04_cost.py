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
# (ch-cost)=
# # Cost
#
# **Claim.** A $U\cdot V$ score costs one forward pass; GradNorm as published costs a backward pass
# per image at batch size 1, and exact ExGrad $C$ of them. **Answer on {glue:text}`nb04_device`:**
# for ResNet-50 the published GradNorm loop costs {glue:text}`nb04_r50_published:.1f`× the batched
# forward pass and exact ExGrad by autograd {glue:text}`nb04_r50_exgrad:.0f`×, while every closed form
# together adds {glue:text}`nb04_r50_cf_overhead:.2f` % to the forward pass.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ood_lib import plots
from ood_lib.book import glue
from ood_lib.cost import grid_cost, score_cost
from ood_lib.features import resolve_device
from ood_lib.models import build_model

# %% tags=["parameters"]
DEVICE = "auto"
SEED = 0
REPEATS = 3
BATCH_RESNET20 = 128
BATCH_RESNET50 = 8
LOOP_IMAGES = 4
EXGRAD_IMAGES = 1
N_GRID = 20000
GRID_CLASSES = 1000
GRID_DIM = 2048
COST_CSV = ""
DEVICE_RESULTS = "../results/device"

# %% [markdown]
# ## Every way of scoring, side by side
#
# Both networks get random weights (timing does not depend on them) and random inputs of their
# usual size. Each path is timed round-robin with the others; medians per image are divided by
# the batched forward pass. With `COST_CSV` set, the page reads the table written by
# `benchmarks/score_cost.py` instead of measuring.

# %%
dev = resolve_device(DEVICE)
torch.manual_seed(SEED)
if COST_CSV:
    cost = pd.read_csv(COST_CSV)
else:
    parts = []
    for name, shape, batch in (("resnet20", (3, 32, 32), BATCH_RESNET20), ("resnet50", (3, 224, 224), BATCH_RESNET50)):
        model = build_model(name).to(dev).eval()
        parts.append(score_cost(model, torch.randn(batch, *shape, device=dev), label=name, repeats=REPEATS,
                                loop_images=LOOP_IMAGES, exgrad_images=EXGRAD_IMAGES))
    cost = pd.concat(parts, ignore_index=True)
ratio = cost.pivot(index="path", columns="model", values="ratio_to_forward")
ms = cost.pivot(index="path", columns="model", values="ms_per_image")
device = str(cost.device.iloc[0])
glue("nb04_device", f"the CPU ({torch.get_num_threads()} threads)" if device == "cpu"
     else f"{device} ({torch.cuda.get_device_name(torch.device(device))})", display=False)
for m in ("resnet20", "resnet50"):
    short = m.replace("resnet", "r")
    glue(f"nb04_{short}_published", float(ratio.loc["gradnorm_published", m]), display=False)
    glue(f"nb04_{short}_exgrad", float(ratio.loc["exgrad_loop", m]), display=False)
    glue(f"nb04_{short}_vmap", float(ratio.loc["vmap_head", m]), display=False)
    glue(f"nb04_{short}_cf_overhead", float(100 * ratio.loc["closed_form_scoring_only", m]), display=False)
    glue(f"nb04_{short}_forward_ms", float(ms.loc["forward", m]), display=False)
ratio.style.format("{:.3f}").set_caption("time per image / batched forward pass")

# %% tags=["hide-input"]
fig = plots.cost_figure(cost)
glue("nb04_fig_cost", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} nb04_fig_cost
# :name: fig-cost
#
# Median time per image of each way of scoring (log scale). `*_scoring_only` rows start from
# features already computed.
# ```
#
# On ResNet-20 the batched forward pass takes {glue:text}`nb04_r20_forward_ms:.2f` ms per image;
# GradNorm's published loop costs {glue:text}`nb04_r20_published:.1f`× that, exact ExGrad
# {glue:text}`nb04_r20_exgrad:.1f`×, and the batched per-sample head gradient
# {glue:text}`nb04_r20_vmap:.2f`×. On a CPU a batch-1 backward pass is relatively cheap; on a GPU,
# where batch size 1 leaves the device idle, the loops fall much further behind.

# %% [markdown]
# ## On a GPU
#
# `benchmarks/device_check.sh` is the one prepared script for a GPU: every benchmark end to end,
# the identities in float64, `torchrun` extraction, and this cost benchmark at batch 1 and 256.
# Its recorded results live in `results/device/` (committed, with the device name and versions);
# this section shows them beside the CPU numbers above, and says what is still missing.

# %% tags=["hide-input"]
gpu_dir = Path(DEVICE_RESULTS)
runs = pd.read_csv(gpu_dir / "runs.csv") if (gpu_dir / "runs.csv").is_file() else None
gpu_env = pd.read_csv(gpu_dir / "environment.csv").iloc[0] if (gpu_dir / "environment.csv").is_file() else None
gpu_cost = [pd.read_csv(f) for f in sorted(gpu_dir.glob("score_cost_b*.csv"))]
steps = pd.read_csv(gpu_dir / "steps.csv") if (gpu_dir / "steps.csv").is_file() else None
todo = steps[steps.status != "ok"] if steps is not None else None
glue("nb04_gpu_missing", "" if todo is None or todo.empty else
     "Not yet recorded on a GPU: " + "; ".join(f"{r.step} ({r.status})" for r in todo.itertuples()) + ".",
     display=False)
if runs is None or gpu_env is None:
    glue("nb04_gpu_runs", "No GPU run is recorded in this copy of the study.", display=False)
else:
    ok = runs[runs.status == "ok"]
    glue("nb04_gpu_runs",
         f"On one {gpu_env.device_name} (torch {gpu_env.torch}), {len(ok)} benchmarks ran end to end "
         f"({', '.join(ok.benchmark)}): {ok.seconds_cold.min():.0f}–{ok.seconds_cold.max():.0f} s each with "
         f"feature extraction, {ok.seconds_warm.min():.0f}–{ok.seconds_warm.max():.0f} s from the caches.",
         display=False)
if gpu_cost:
    g = pd.concat(gpu_cost, ignore_index=True)
    side = pd.concat({"CPU": ratio, **{f"GPU, batch {b}": t.pivot(index="path", columns="model", values="ratio_to_forward")
                                       for b, t in g.groupby("batch")}}, axis=1)
    glue("nb04_gpu_cost", "The cost benchmark's GPU rows are in the table below, beside the CPU rows.", display=False)
else:
    side = ratio
    glue("nb04_gpu_cost", "The cost benchmark's GPU rows (batch 1 and 256) are not recorded yet: the GPU run "
         "stopped before that step, so every ratio on this page is measured on the CPU.", display=False)
runs

# %% [markdown]
# {glue:text}`nb04_gpu_runs` {glue:text}`nb04_gpu_cost` {glue:text}`nb04_gpu_missing`

# %% tags=["hide-input"]
side.style.format("{:.3f}", na_rep="—").set_caption("time per image / batched forward pass")

# %% [markdown]
# ## Scoring from cached features
#
# Once $h$ and the logits are cached, the whole closed-form family — every $U\cdot V$ member, the
# baselines that need only the logits and every gradient closed form — is a few passes over two
# arrays.

# %%
g = grid_cost(N_GRID, GRID_CLASSES, GRID_DIM, repeats=REPEATS, seed=SEED)
glue("nb04_grid_seconds", g["seconds"], display=False)
glue("nb04_grid_n", f"{g['n']:,}", display=False)
glue("nb04_grid_members", g["members"], display=False)
glue("nb04_grid_classes", f"{g['classes']:,}", display=False)
pd.Series(g)

# %% [markdown]
# All {glue:text}`nb04_grid_members` closed-form scores for {glue:text}`nb04_grid_n` samples ×
# {glue:text}`nb04_grid_classes` classes take {glue:text}`nb04_grid_seconds:.2f` s.
#
# ## Summary
#
# * Closed forms add {glue:text}`nb04_r20_cf_overhead:.2f` % (ResNet-20) and
#   {glue:text}`nb04_r50_cf_overhead:.2f` % (ResNet-50) to the forward pass.
# * A per-sample gradient need not be slow: batched over samples with `torch.func`, the head
#   gradient costs {glue:text}`nb04_r50_vmap:.2f`× the forward pass on ResNet-50 — but it still only
#   reproduces a closed form.
