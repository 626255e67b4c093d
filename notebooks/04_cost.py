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
# for ResNet-50 (batch {glue:text}`nb04_r50_batch`, medians of {glue:text}`nb04_r50_repeats`
# repeats) the published GradNorm loop costs {glue:text}`nb04_r50_published:.1f`× the batched
# forward pass and exact ExGrad by autograd {glue:text}`nb04_r50_exgrad:.0f`×. Scoring every
# closed form from cached features costs {glue:text}`nb04_r50_cf_overhead`× the forward pass;
# forward pass and every closed form together take {glue:text}`nb04_r50_cf_total:.2f`× the
# forward pass alone ({glue:text}`nb04_r50_cf_total_lo:.2f`–{glue:text}`nb04_r50_cf_total_hi:.2f`×
# over the repeats). Exact per-sample gradient norms of *every* parameter tensor of
# {glue:text}`nb04_layer_model` cost {glue:text}`nb04_layer_hooks_over_fb:.2f`× one batched
# forward + backward ({glue:text}`nb04_layer_hooks_over_fb_lo:.2f`–{glue:text}`nb04_layer_hooks_over_fb_hi:.2f`×
# over the repeats) and run {glue:text}`nb04_layer_loop_over_hooks:.1f`× faster than the batch-1
# loop. The recorded GPU timings are in {ref}`sec-cost-gpu`; {numref}`fig-cost` draws every ratio,
# CPU and GPU side by side.

# %% tags=["remove-cell"]
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from ood_lib.book import glue, plots, tables
from ood_lib.findings.labels import model_name, short_pair
from ood_lib.gradients.verify import recorded_checks
from ood_lib.models import build_model
from ood_lib.run.cost import (ALL_CLOSED_FORM, FEW_MEMBERS, LAYER_CHUNK, LAYER_LOOP_PATHS, LAYER_PATHS,
                              PATHS, grid_cost, layer_ratios, score_cost, scoring_ops)
from ood_lib.run.features import resolve_device

plt.rcParams.update(plots.BOOK_STYLE)

# %% [markdown]
# **Parameters.** The defaults time small batches on whatever device is found (`DEVICE`), so
# that the page builds quickly on a CPU. For the numbers of `benchmarks/score_cost.py`, raise
# `BATCH_RESNET20`/`BATCH_RESNET50`, `REPEATS` and the number of images the loops time
# (`LOOP_IMAGES`, `EXGRAD_IMAGES`), or point `COST_CSV` at a table that script wrote.
# `PER_LAYER_MODELS` are also timed on the per-sample gradient norms of every layer.
# `N_GRID`, `GRID_CLASSES` and `GRID_DIM` size the cached-feature benchmark at the end;
# `DEVICE_RESULTS` is the folder of recorded GPU results.

# %% tags=["parameters", "hide-cell"]
DEVICE = "auto"
SEED = 0
REPEATS = 3
BATCH_RESNET20 = 128
BATCH_RESNET50 = 4
LOOP_IMAGES = 2
EXGRAD_IMAGES = 1
PER_LAYER_MODELS = ["resnet20"]
N_GRID = 10000
GRID_CLASSES = 1000
GRID_DIM = 2048
COST_CSV = ""
DEVICE_RESULTS = "../results/device"

# %% [markdown]
# ## Every way of scoring, side by side
#
# Both networks get random weights (timing does not depend on them) and random inputs of their
# usual size. `score_cost` times each way of scoring round-robin with the others and divides
# its median time per image by that of the batched forward pass. With `COST_CSV` set, the page
# reads the table written by `benchmarks/score_cost.py` instead of measuring.

# %%
dev = resolve_device(DEVICE)
torch.manual_seed(SEED)
nets = {"resnet20": ((3, 32, 32), BATCH_RESNET20),
        "resnet50": ((3, 224, 224), BATCH_RESNET50)}
if COST_CSV:
    cost = pd.read_csv(COST_CSV)
else:
    parts = []
    for name, (shape, batch) in nets.items():
        model = build_model(name).to(dev).eval()
        x = torch.randn(batch, *shape, device=dev)
        layer = (LAYER_PATHS + LAYER_LOOP_PATHS
                 if name in PER_LAYER_MODELS else ())
        parts.append(score_cost(
            model, x, label=name, repeats=REPEATS, paths=PATHS + layer,
            loop_images=LOOP_IMAGES, exgrad_images=EXGRAD_IMAGES))
    cost = pd.concat(parts, ignore_index=True)
ratio = cost.pivot(index="path", columns="model",
                   values="ratio_to_forward")

# %% [markdown]
# The ratios the text quotes, per network; for the end-to-end closed forms also their range over
# the repeats (fastest and slowest run ÷ the median forward pass), and what was timed:

# %%
ms = cost.pivot(index="path", columns="model", values="ms_per_image")
row = cost.drop_duplicates(["path", "model"]).set_index(["path", "model"])
quoted = pd.DataFrame({
    "published": ratio.loc["gradnorm_published"],
    "exgrad": ratio.loc["exgrad_loop"],
    "vmap": ratio.loc["vmap_head"],
    "cf_overhead": ratio.loc["closed_form_scoring_only"].map(tables.ratio_text),
    "cf_total": ratio.loc["closed_form"],
    "cf_total_lo": row.loc["closed_form"].ms_min / ms.loc["forward"],
    "cf_total_hi": row.loc["closed_form"].ms_max / ms.loc["forward"],
    "forward_ms": ms.loc["forward"],
    "batch": row.loc["gradnorm_published"].batch,
    "repeats": row.loc["gradnorm_published"].repeats,
    "loop_images": row.loc["gradnorm_published"].images_timed,
    "exgrad_images": row.loc["exgrad_loop"].images_timed,
}).rename(index=lambda m: m.replace("resnet", "r"))
# networks on which that range includes 1×: no measurable cost there
n_within = int(((quoted.cf_total_lo <= 1) & (quoted.cf_total_hi >= 1)).sum())
device = str(cost.device.iloc[0])
here = "CPU" if device == "cpu" else device

# %% tags=["remove-cell"]
for net, numbers in quoted.to_dict("index").items():
    for key, value in numbers.items():
        glue(f"nb04_{net}_{key}", value)
glue("nb04_n_within", n_within)
glue("nb04_n_nets", len(quoted))
glue("nb04_here", here)
name = cost.device_name.iloc[0] if "device_name" in cost else device
glue("nb04_device", f"{'a CPU' if device == 'cpu' else 'a GPU'} ({name}; a table recorded by benchmarks/score_cost.py)"
     if COST_CSV else f"the CPU ({torch.get_num_threads()} threads)" if device == "cpu"
     else f"{device} ({torch.cuda.get_device_name(torch.device(device))})")

# %% tags=["hide-input"]
order = list(dict.fromkeys(cost.path))
cpu_table = ratio.reindex(order).rename(
    index=tables.cost_path_label, columns=tables.model_label)
cpu_table.index.name = None
cpu_table.columns.name = None
tables.book_table(cpu_table.style.format(tables.ratio_text),
                  f"Time per image ÷ batched forward pass, on {here}")

# %% [markdown]
# On ResNet-20 (batch {glue:text}`nb04_r20_batch`) the batched forward pass takes
# {glue:text}`nb04_r20_forward_ms:.2f` ms per image; GradNorm's published loop costs
# {glue:text}`nb04_r20_published:.1f`× that, exact ExGrad {glue:text}`nb04_r20_exgrad:.1f`×, and
# the batched per-sample head gradient {glue:text}`nb04_r20_vmap:.2f`×. The loops are timed on a
# few images of the batch (GradNorm's on {glue:text}`nb04_r20_loop_images`, ExGrad's on
# {glue:text}`nb04_r20_exgrad_images`; on ResNet-50, batch {glue:text}`nb04_r50_batch`:
# {glue:text}`nb04_r50_loop_images` and {glue:text}`nb04_r50_exgrad_images`), and every time is a
# median over {glue:text}`nb04_r20_repeats` repeats. The rows "cached h" time the
# scoring alone: every closed form costs {glue:text}`nb04_r20_cf_overhead`× (ResNet-20) and
# {glue:text}`nb04_r50_cf_overhead`× (ResNet-50) the forward pass. Measured end to end, forward
# pass and every closed form take {glue:text}`nb04_r20_cf_total:.2f`×
# ({glue:text}`nb04_r20_cf_total_lo:.2f`–{glue:text}`nb04_r20_cf_total_hi:.2f`× over the
# repeats) and {glue:text}`nb04_r50_cf_total:.2f`×
# ({glue:text}`nb04_r50_cf_total_lo:.2f`–{glue:text}`nb04_r50_cf_total_hi:.2f`×) the forward
# pass alone. On {glue:text}`nb04_n_within` of the {glue:text}`nb04_n_nets` networks that range
# includes 1×: there, on this run, the closed forms add no measurable time to the forward pass.
# On a CPU a batch-1 backward pass is relatively cheap; on a GPU, where batch size 1 leaves the
# device idle, the loops fall much further behind. At this page's default sizes (small batches,
# few repeats, a machine shared with other work) ratios close to 1× can come out in either order —
# a path that includes another may time a little faster than it; the ranges over the repeats in
# the figure below say how far each ratio can be trusted, and the recorded GPU runs
# ({ref}`sec-cost-gpu`) are the ones to quote.

# %% [markdown]
# ## Per-sample gradients of every layer
#
# Below the head only Linear layers (and, in part, the last convolution) have closed forms
# ({ref}`ch-closed-forms`), so a score built on the gradients of every layer needs the
# per-sample gradients themselves. The yardstick is one batched forward + backward, which gives
# every parameter's gradient *summed* over the batch. Three exact paths give the per-image
# $\|\nabla_\theta \ell\|_1$ and $\|\nabla_\theta \ell\|_2^2$ of every parameter tensor
# $\theta$: the batch-1 loop (`loss.backward()` per image), plain `torch.func`
# (`vmap(grad(·))`), and one batched forward + backward per chunk of 64 images with each layer's
# per-sample gradient rebuilt from its input and back-propagated signal (hooks):

# %%
# medians ÷ forward + backward, and the batch-1 loop's slowdown
lr = layer_ratios(cost).iloc[0]
layer_rows = cost[cost.model == lr.model].set_index("path")

# %% tags=["remove-cell"]
for key, value in {**lr.filter(like="_over_").astype(float).to_dict(),
                   "model": tables.model_label(lr.model),
                   "batch": int(layer_rows.batch.iloc[0]),
                   "repeats": int(layer_rows.repeats.iloc[0]),
                   "loop_images": int(layer_rows.loc["per_layer_loop", "images_timed"])}.items():
    glue(f"nb04_layer_{key}", value)

# %% tags=["hide-input"]
layer_paths = ["forward", "closed_form", "forward_backward",
               *LAYER_PATHS[1:], *LAYER_LOOP_PATHS]
fb = layer_rows.loc["forward_backward", "ms_per_image"]
layer_table = pd.DataFrame({
    "÷ forward pass": layer_rows.ratio_to_forward,
    "÷ forward + backward": layer_rows.ms_per_image / fb,
}).reindex(layer_paths).rename(index=tables.cost_path_label)
tables.book_table(
    layer_table.style.format(tables.ratio_text),
    f"{tables.model_label(lr.model)}, every layer's per-sample gradient "
    f"norms: time per image on {here}")

# %% [markdown]
# On {glue:text}`nb04_layer_model` (batch {glue:text}`nb04_layer_batch`) one batched forward +
# backward costs {glue:text}`nb04_layer_fb_over_forward:.1f`× the forward pass. The per-sample
# norms of every layer by hooks cost {glue:text}`nb04_layer_hooks_over_fb:.2f`× that forward +
# backward, plain `torch.func` {glue:text}`nb04_layer_all_over_fb:.2f`×; the batch-1 loop (timed
# on {glue:text}`nb04_layer_loop_images` images) is {glue:text}`nb04_layer_loop_over_hooks:.1f`×
# slower than hooks and {glue:text}`nb04_layer_loop_over_all:.1f`× slower than `torch.func`. Over
# the {glue:text}`nb04_layer_repeats` repeats, the hooks cost
# {glue:text}`nb04_layer_hooks_over_fb_lo:.2f`–{glue:text}`nb04_layer_hooks_over_fb_hi:.2f`× one
# forward + backward (fastest hooks run ÷ slowest forward + backward, and the converse). The
# spread of every path over the repeats is drawn in {numref}`fig-cost`.

# %% [markdown]
# (sec-cost-gpu)=
# ## On a GPU
#
# `benchmarks/device_check.sh` is the one prepared script for a GPU: every benchmark end to end,
# the identities in float64, `torchrun` extraction, and this cost benchmark at batch 1 and 256.
# Its recorded results live in `results/device/` (committed, with the device name and versions);
# this section shows them beside the CPU numbers above, and says what is still missing. The
# script's steps that did not finish, the float64 checks (`verify_*.csv`) and the cost tables
# at each batch size:

# %%
gpu_dir = Path(DEVICE_RESULTS)
gpu_env = pd.read_csv(gpu_dir / "environment.csv").iloc[0]
runs = pd.read_csv(gpu_dir / "runs.csv").query("status == 'ok'")
steps = pd.read_csv(gpu_dir / "steps.csv").query("status != 'ok'")
not_done = steps.step.str.replace(  # benchmark ids by their display names
    r"^(\w+) end to end$", lambda m: f"{short_pair(m[1])} end to end", regex=True)
checks = recorded_checks(gpu_dir)
last, every_layer = (checks[checks.check == c] for c in ("last layer", "every layer"))
gpu_cost = [pd.read_csv(f) for f in sorted(gpu_dir.glob("score_cost_b*.csv"))]
gpu = pd.concat(gpu_cost, ignore_index=True)
b_lo, b_hi = gpu.batch.min(), gpu.batch.max()

# %% [markdown]
# Where the per-layer paths were timed, their ratios at the largest batch (at batch 1 there is
# nothing to batch), and the time of one call of a batched path, its time per image × the batch
# size, at the smallest and the largest batch:

# %%
big = gpu[gpu.batch == b_hi]
loop = "per_layer_loop" if "per_layer_loop" in set(big.path) else "gradnorm_published"
g = layer_ratios(big, loop=loop).iloc[0]
net = gpu[gpu.model == g.model]
gpu_ratio = net.pivot(index="path", columns="batch", values="ratio_to_forward")
call_ms = net.pivot(index="path", columns="batch", values="ms_per_image") * [b_lo, b_hi]
hooks_chunk = call_ms.loc["per_layer_hooks", b_hi] / -(-b_hi // LAYER_CHUNK)
# a single image's share of the time of a chunk of LAYER_CHUNK images
one_of_chunk = call_ms.loc["per_layer_hooks", b_lo] / hooks_chunk
cf, vm = "closed_form_scoring_only", "vmap_head_scoring_only"  # from cached h
cf_total = gpu_ratio.loc["closed_form"]  # forward pass + every closed form, per batch size
not_free = cf_total[b_lo] >= 2  # at the smaller batch, more than twice the forward pass alone

# %% tags=["remove-cell"]
for key, value in {
        "name": gpu_env.device_name, "torch": gpu_env.torch, "n_runs": len(runs),
        "cold_lo": runs.seconds_cold.min(), "cold_hi": runs.seconds_cold.max(),
        "warm_lo": runs.seconds_warm.min(), "warm_hi": runs.seconds_warm.max(),
        "not_done": "; ".join(f"{s} ({w})" for s, w in zip(not_done, steps.status)) or "none",
        "last_worst": last.worst.max(), "last_n": len(last),
        "layer_worst": every_layer.worst.max(), "layer_tensors": every_layer.rows.sum(),
        "layer_models": " and ".join(map(model_name, every_layer.name)),
        "b_lo": b_lo, "b_hi": b_hi, "model": tables.model_label(g.model),
        **g[["hooks_over_fb", "all_over_fb", "loop_over_hooks"]].astype(float).to_dict(),
        "loop": tables.cost_path_label(loop),
        "fb_call": call_ms.loc["forward_backward", b_hi], "hooks_chunk": hooks_chunk,
        "hooks_one": call_ms.loc["per_layer_hooks", b_lo], "chunk": LAYER_CHUNK,
        "one_of_chunk": 100 * one_of_chunk, "n_scores": len(ALL_CLOSED_FORM),
        "cf_lo": gpu_ratio.loc[cf, b_lo], "cf_hi": gpu_ratio.loc[cf, b_hi],
        "vm_lo": gpu_ratio.loc[vm, b_lo], "vm_hi": gpu_ratio.loc[vm, b_hi],
        "cf_call_lo": call_ms.loc[cf, b_lo], "cf_call_hi": call_ms.loc[cf, b_hi],
        "cft_lo": cf_total[b_lo], "cft_hi": cf_total[b_hi]}.items():
    glue(f"nb04_gpu_{key}", value.item() if hasattr(value, "item") else value)
glue("nb04_gpu_cft_reading", "so for a small network on a GPU the closed forms are not free at a small batch: each call is "
     "many small kernel launches, a fixed cost a larger batch spreads" if not_free else "cheap at either batch size")

# %% [markdown]
# On one {glue:text}`nb04_gpu_name` (torch {glue:text}`nb04_gpu_torch`),
# {glue:text}`nb04_gpu_n_runs` benchmarks ran end to end (the last table below):
# {glue:text}`nb04_gpu_cold_lo:.0f`–{glue:text}`nb04_gpu_cold_hi:.0f` s each with feature
# extraction, {glue:text}`nb04_gpu_warm_lo:.0f`–{glue:text}`nb04_gpu_warm_hi:.0f` s from the
# caches. The cost benchmark's GPU rows, at batch {glue:text}`nb04_gpu_b_lo` and
# {glue:text}`nb04_gpu_b_hi`, are in the tables and the figure below, beside the CPU rows. Not
# recorded on a GPU: {glue:text}`nb04_gpu_not_done`. In float64 on the GPU, the last-layer closed
# forms match autograd to {glue:text}`nb04_gpu_last_worst:.0e` in units of V
# ({glue:text}`nb04_gpu_last_n` models), and the per-sample gradient norms of all
# {glue:text}`nb04_gpu_layer_tensors` parameter tensors of {glue:text}`nb04_gpu_layer_models`
# match the batch-1 loop to {glue:text}`nb04_gpu_layer_worst:.0e`, relative.
#
# From cached features on the GPU, every closed form costs {glue:text}`nb04_gpu_cf_lo:.2f`× a
# {glue:text}`nb04_gpu_model` forward pass at batch {glue:text}`nb04_gpu_b_lo` and
# {glue:text}`nb04_gpu_cf_hi:.2f`× at batch {glue:text}`nb04_gpu_b_hi`, the per-sample head
# gradient by vmap {glue:text}`nb04_gpu_vm_lo:.2f`× and {glue:text}`nb04_gpu_vm_hi:.2f`×. One call
# of the closed forms takes {glue:text}`nb04_gpu_cf_call_lo:.1f` ms at batch
# {glue:text}`nb04_gpu_b_lo` and {glue:text}`nb04_gpu_cf_call_hi:.1f` ms at batch
# {glue:text}`nb04_gpu_b_hi`: the time is a fixed cost per call, not work per image — the
# many small operations of {glue:text}`nb04_gpu_n_scores` scores, whose launch overhead dominates
# at this size.
#
# At batch {glue:text}`nb04_gpu_b_hi`, the per-sample norms of every layer of
# {glue:text}`nb04_gpu_model` cost {glue:text}`nb04_gpu_hooks_over_fb:.1f`× one batched forward +
# backward by hooks (on {glue:text}`nb04_here` above: {glue:text}`nb04_layer_hooks_over_fb:.2f`×)
# and {glue:text}`nb04_gpu_all_over_fb:.1f`× by plain torch.func, and run
# {glue:text}`nb04_gpu_loop_over_hooks:.1f`× faster than the batch-1 loop (the row
# “{glue:text}`nb04_gpu_loop`” below). The batched forward + backward of all
# {glue:text}`nb04_gpu_b_hi` images takes {glue:text}`nb04_gpu_fb_call:.1f` ms; the hooks take
# {glue:text}`nb04_gpu_hooks_chunk:.1f` ms per chunk of {glue:text}`nb04_gpu_chunk` images and
# {glue:text}`nb04_gpu_hooks_one:.1f` ms for a single image, {glue:text}`nb04_gpu_one_of_chunk:.0f` %
# of a chunk's time. Their time thus goes with the number of chunks, not of images: the
# per-layer rebuild is many small operations, each with a fixed cost that the cheap batched
# backward of a GPU does not hide. Per model, each way of scoring against the forward pass, then
# the end-to-end runs:

# %% tags=["hide-input"]
settings = [cost.assign(setting=f"{here}, " + ("recorded" if COST_CSV else "measured here"))]
settings += [t.assign(setting=f"GPU, batch {t.batch.iloc[0]}") for t in gpu_cost]
every = pd.concat(settings, ignore_index=True)
for m, t in every.groupby("model", sort=False):
    side = t.pivot(index="path", columns="setting",
                   values="ratio_to_forward")
    side = side.reindex(index=list(dict.fromkeys(t.path)),
                        columns=list(dict.fromkeys(t.setting)))
    side = side.rename(index=tables.cost_path_label)
    side.index.name = side.columns.name = None
    display(tables.book_table(
        side.style.format(tables.ratio_text),
        f"{tables.model_label(m)}: time per image ÷ forward pass "
        "at the same batch size"))
named = runs.assign(benchmark=runs.benchmark.map(short_pair))
named = named[["benchmark", "seconds_cold", "seconds_warm"]].rename(
    columns={"benchmark": "benchmark · model",
             "seconds_cold": "with extraction (s)",
             "seconds_warm": "from caches (s)"})
display(tables.book_table(
    named.style.hide(axis="index").format(precision=0),
    "End-to-end runs on the GPU", numbers=False))

# %% tags=["hide-input"]
fig = plots.cost_figure(every, panel="setting")
glue("nb04_fig_cost", fig)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} nb04_fig_cost
# :name: fig-cost
# :alt: Horizontal bars of each way of scoring's time per image divided by the forward pass, on a log scale, one panel per device and batch size.
#
# The gradient loops cost many forward passes, the closed forms from cached features a fraction of
# one (ResNet-50 here: {glue:text}`nb04_r50_published:.1f`× against
# {glue:text}`nb04_r50_cf_overhead`×). Time per image of each way of scoring divided by the forward pass at the same batch size
# (dashed line: 1×, the forward pass itself), for the CPU timing on this page and, where
# recorded, a GPU at batch 1 and 256; bars are medians, whiskers the range over the repeats.
# "cached h" rows start from features already computed.
# ```

# %% [markdown]
# (sec-cost-fused)=
# ## Every closed form in one call
#
# Every closed form is $c\cdot U(h)\cdot V(p)$ ({ref}`ch-closed-forms`), and all $U$ terms come
# from three norms of $h$, all $V$ terms from one pass over the logits. Scored one member at a
# time, each member still makes its own products and its own finiteness check — a host sync, on a
# GPU a wait for the device — so the number of small operations, each a kernel launch on a GPU,
# grows with the number of members. `score_matrix` computes the shared statistics once, stacks
# the $U$ terms into a $(k_U, N)$ and the $V$ terms into a $(k_V, N)$ tensor, forms every member
# as one row of `(c[:, None] * U[u]) * V[v]` (the constant $c$ carries a flipped reading's sign)
# and checks the whole result once. Its rows equal the per-member scores bit for bit in float64.
# The count of operator calls of one scoring call, from `torch.profiler`, is the CPU-measurable
# stand-in for the number of kernel launches:

# %%
with torch.inference_mode():
    h_r20, f_r20 = build_model("resnet20").to(dev).eval().forward_features(
        torch.randn(BATCH_RESNET20, 3, 32, 32, device=dev))
ops = scoring_ops(h_r20, f_r20)  # for FEW_MEMBERS and for all members
n_all, n_few = len(ALL_CLOSED_FORM), len(FEW_MEMBERS)
calls = ops.pivot(index="members", columns="path", values="operator_calls")
syncs = ops.pivot(index="members", columns="path", values="host_syncs")
# scoring alone from cached features, all members fused and one at a time
fused = ratio.reindex(["closed_form_scoring_only",
                       "closed_form_per_member_scoring_only"])["resnet20"]
fused_x = fused.iloc[1] / fused.iloc[0]  # one at a time ÷ one call
# GPU tables recorded with the fused call (older ones time members one at a time)
n_fused_gpu = sum("closed_form_per_member" in set(t.path) for t in gpu_cost)

# %% tags=["remove-cell"]
for key, path in (("fused", "fused"), ("pm", "per_member")):
    for name, n in (("ops_all", calls.loc[n_all, path]), ("ops_few", calls.loc[n_few, path]), ("syncs_all", syncs.loc[n_all, path])):
        glue(f"nb04_{key}_{name}", f"{int(n):,}")
for key, value in {"members": n_all, "batch": int(ops.batch.iloc[0]), "one_call": tables.ratio_text(fused.iloc[0]),
                   "per_member": tables.ratio_text(fused.iloc[1]), "x": "—" if pd.isna(fused_x) else f"{fused_x:.1f}",
                   "n_gpu": n_fused_gpu, "n_gpu_tables": len(gpu_cost)}.items():
    glue(f"nb04_fused_{key}", value)

# %% tags=["hide-input"]
ops_table = pd.DataFrame({
    "operator calls, one call": calls["fused"],
    "operator calls, per member": calls["per_member"],
    "host syncs, one call": syncs["fused"],
    "host syncs, per member": syncs["per_member"],
}).rename(index=lambda m: f"{m} members")
ops_table.index.name = None
tables.book_table(
    ops_table.style.format("{:,}"),
    f"Operator calls of one scoring call from ResNet-20 features "
    f"(batch {int(ops.batch.iloc[0])}), on {here}")

# %% [markdown]
# Scoring all {glue:text}`nb04_fused_members` closed forms in one call makes
# {glue:text}`nb04_fused_ops_all` operator calls (ResNet-20 features, batch
# {glue:text}`nb04_fused_batch`) — as many as ten members, {glue:text}`nb04_fused_ops_few` — and
# {glue:text}`nb04_fused_syncs_all` host syncs, those of the input checks and the one finiteness
# check. One member at a time the same scores take {glue:text}`nb04_pm_ops_few` operator calls
# for ten members and {glue:text}`nb04_pm_ops_all` for all, with
# {glue:text}`nb04_pm_syncs_all` host syncs. Timed on {glue:text}`nb04_device` from cached
# features (ResNet-20, batch {glue:text}`nb04_r20_batch`), all members in one call cost
# {glue:text}`nb04_fused_one_call`× the forward pass and one member at a time
# {glue:text}`nb04_fused_per_member`×, {glue:text}`nb04_fused_x`× as much (end to end, with the
# forward pass: the first table). Of the {glue:text}`nb04_fused_n_gpu_tables` recorded GPU cost
# tables, {glue:text}`nb04_fused_n_gpu` time the fused call; a table recorded before it has the per-member path in its closed-form rows, one call per member, until
# `benchmarks/device_check.sh` is run again on a GPU.

# %% [markdown]
# ## Scoring from cached features
#
# Once $h$ and the logits are cached, the whole closed-form family — every $U\cdot V$ member, the
# baselines that need only the logits and every gradient closed form — is a few passes over two
# arrays.

# %%
g = grid_cost(N_GRID, GRID_CLASSES, GRID_DIM, repeats=REPEATS, seed=SEED)

# %% tags=["remove-cell"]
for key, value in g.items():
    glue(f"nb04_grid_{key}", f"{value:,}" if isinstance(value, int) else value)

# %% [markdown]
# All {glue:text}`nb04_grid_members` closed-form scores for {glue:text}`nb04_grid_n` samples ×
# {glue:text}`nb04_grid_classes` classes (features of dimension {glue:text}`nb04_grid_dim`) take
# {glue:text}`nb04_grid_seconds:.2f` s.
#
# ## Summary
#
# * On {glue:text}`nb04_device`, scoring every closed form from cached features costs
#   {glue:text}`nb04_r20_cf_overhead`× (ResNet-20) and
#   {glue:text}`nb04_r50_cf_overhead`× (ResNet-50) the forward pass; end to end, forward
#   pass and closed forms take {glue:text}`nb04_r50_cf_total:.2f`×
#   ({glue:text}`nb04_r50_cf_total_lo:.2f`–{glue:text}`nb04_r50_cf_total_hi:.2f`×) the forward
#   pass alone on ResNet-50.
# * On a GPU ({glue:text}`nb04_gpu_name`), forward pass and every closed form take
#   {glue:text}`nb04_gpu_cft_lo:.1f`× the {glue:text}`nb04_gpu_model` forward pass alone at batch
#   {glue:text}`nb04_gpu_b_lo` and {glue:text}`nb04_gpu_cft_hi:.1f`× at batch
#   {glue:text}`nb04_gpu_b_hi`, {glue:text}`nb04_gpu_cft_reading` ({ref}`sec-cost-gpu`).
# * A per-sample gradient need not be slow: batched over samples with `torch.func`, the head
#   gradient costs {glue:text}`nb04_r50_vmap:.2f`× the forward pass on ResNet-50 — but it still only
#   reproduces a closed form.
# * Below the head, exact per-sample norms of every layer cost
#   {glue:text}`nb04_layer_hooks_over_fb:.2f`× one batched forward + backward
#   ({glue:text}`nb04_layer_hooks_over_fb_lo:.2f`–{glue:text}`nb04_layer_hooks_over_fb_hi:.2f`× over the
#   repeats) on {glue:text}`nb04_layer_model`, {glue:text}`nb04_layer_loop_over_hooks:.1f`× faster
#   than the batch-1 loop.
