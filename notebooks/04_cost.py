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
# for ResNet-50 ({glue:text}`nb04_r50_timing`) the published GradNorm loop costs
# {glue:text}`nb04_r50_published:.1f`× the batched forward pass and exact ExGrad by autograd
# {glue:text}`nb04_r50_exgrad:.0f`×. Scoring every closed form from cached features costs
# {glue:text}`nb04_r50_cf_overhead`× the forward pass; forward pass and every closed form
# together take {glue:text}`nb04_r50_cf_total:.2f`× the forward pass alone
# ({glue:text}`nb04_r50_cf_total_lo:.2f`–{glue:text}`nb04_r50_cf_total_hi:.2f`× over the repeats).
# Exact per-sample gradient norms of *every* parameter tensor of {glue:text}`nb04_layer_model`
# cost {glue:text}`nb04_layer_hooks_fb:.2f`× one batched forward + backward
# ({glue:text}`nb04_layer_hooks_fb_lo:.2f`–{glue:text}`nb04_layer_hooks_fb_hi:.2f`× over the
# repeats) and run {glue:text}`nb04_layer_loop_speedup:.1f`× faster than the batch-1 loop. The
# recorded GPU timings are in {ref}`sec-cost-gpu`.

# %% tags=["remove-cell"]
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from ood_lib.book import plots, tables
from ood_lib.book import glue
from ood_lib.run.cost import (ALL_CLOSED_FORM, FEW_MEMBERS, LAYER_CHUNK,
                          LAYER_LOOP_PATHS, LAYER_PATHS, PATHS,
                          grid_cost, layer_ratios, ms_per_call, path_value,
                          score_cost, scoring_ops)
from ood_lib.run.features import resolve_device
from ood_lib.findings.labels import model_name, short_pair
from ood_lib.models import build_model
from ood_lib.book.report import step_label
from ood_lib.gradients.verify import recorded_checks

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

# %% tags=["remove-cell"]
ms = cost.pivot(index="path", columns="model", values="ms_per_image")
device = str(cost.device.iloc[0])
here = "CPU" if device == "cpu" else device
if COST_CSV:  # a recorded table: its own device, not this kernel's
    name = cost.device_name.iloc[0] if "device_name" in cost else device
    glue("nb04_device", f"{'a CPU' if device == 'cpu' else 'a GPU'} ({name}; a table "
         "recorded by benchmarks/score_cost.py)", display=False)
else:
    glue("nb04_device",
         f"the CPU ({torch.get_num_threads()} threads)" if device == "cpu"
         else f"{device} "
              f"({torch.cuda.get_device_name(torch.device(device))})",
         display=False)
within = {}
for m in ("resnet20", "resnet50"):
    short = m.replace("resnet", "r")
    for key, path in (("published", "gradnorm_published"),
                      ("exgrad", "exgrad_loop"), ("vmap", "vmap_head")):
        glue(f"nb04_{short}_{key}", float(ratio.loc[path, m]),
             display=False)
    # scoring alone, from features already computed: a ratio to the
    # forward pass, as the tables print it
    glue(f"nb04_{short}_cf_overhead",
         tables.ratio_text(ratio.loc["closed_form_scoring_only", m]),
         display=False)
    # forward + every closed form, end to end, with its range over repeats
    cf = cost[(cost.model == m) & (cost.path == "closed_form")].iloc[0]
    glue(f"nb04_{short}_cf_total", float(cf.ratio_to_forward), display=False)
    for end, col in (("lo", "ms_min"), ("hi", "ms_max")):
        glue(f"nb04_{short}_cf_total_{end}",
             float(cf[col] / ms.loc["forward", m]), display=False)
    within[m] = cf.ms_min <= ms.loc["forward", m] <= cf.ms_max
    row = cost[(cost.model == m) & (cost.path == "gradnorm_published")]
    r0 = row.iloc[0]
    n_ex = int(cost[(cost.model == m) & (cost.path == "exgrad_loop")]
               .images_timed.iloc[0])
    glue(f"nb04_{short}_timing",
         f"batch {r0.batch}, the GradNorm loop timed on {r0.images_timed} "
         f"images and the ExGrad loop on {n_ex} image{'s' * (n_ex != 1)}, "
         f"medians of {r0.repeats} repeats", display=False)
    glue(f"nb04_{short}_forward_ms", float(ms.loc["forward", m]),
         display=False)

glue("nb04_cf_total_note",
     ": on both networks the range over the repeats includes 1×, so on "
     "this run the closed forms add no measurable time to the forward pass."
     if all(within.values()) else
     " (ranges: the closed form's fastest and slowest run ÷ the median "
     "forward pass).", display=False)

# %% tags=["hide-input"]
order = list(dict.fromkeys(cost.path))
cpu_table = ratio.reindex(order).rename(
    index=tables.cost_path_label, columns=tables.model_label)
cpu_table.index.name = None
cpu_table.columns.name = None
tables.book_table(cpu_table.style.format(tables.ratio_text),
                  f"Time per image ÷ batched forward pass, on {here}")

# %% [markdown]
# On ResNet-20 the batched forward pass takes {glue:text}`nb04_r20_forward_ms:.2f` ms per image;
# GradNorm's published loop costs {glue:text}`nb04_r20_published:.1f`× that, exact ExGrad
# {glue:text}`nb04_r20_exgrad:.1f`×, and the batched per-sample head gradient
# {glue:text}`nb04_r20_vmap:.2f`× ({glue:text}`nb04_r20_timing`; ResNet-50:
# {glue:text}`nb04_r50_timing`). The rows "from cached h" time the scoring alone: every closed
# form costs {glue:text}`nb04_r20_cf_overhead`× (ResNet-20) and
# {glue:text}`nb04_r50_cf_overhead`× (ResNet-50) the forward pass. Measured end to end,
# forward pass and every closed form take {glue:text}`nb04_r20_cf_total:.2f`×
# ({glue:text}`nb04_r20_cf_total_lo:.2f`–{glue:text}`nb04_r20_cf_total_hi:.2f`× over the
# repeats) and {glue:text}`nb04_r50_cf_total:.2f`×
# ({glue:text}`nb04_r50_cf_total_lo:.2f`–{glue:text}`nb04_r50_cf_total_hi:.2f`×) the forward
# pass alone{glue:text}`nb04_cf_total_note` On a CPU a
# batch-1 backward pass is relatively cheap; on a GPU, where batch size 1 leaves the device
# idle, the loops fall much further behind. At this page's default sizes (small batches, few
# repeats, a machine shared with other work) ratios close to 1× can come out in either order —
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
# per-sample gradient rebuilt from its input and back-propagated signal (hooks).

# %%
# medians ÷ forward + backward, and the batch-1 loop's slowdown
lr = layer_ratios(cost).iloc[0]

# %% tags=["remove-cell"]
layer_rows = cost[cost.model == lr.model].set_index("path")
glue("nb04_layer_model", tables.model_label(lr.model), display=False)
glue("nb04_layer_batch", int(layer_rows.batch.iloc[0]), display=False)
glue("nb04_layer_loop_images",
     int(layer_rows.loc["per_layer_loop", "images_timed"]), display=False)
for key, col in (("fb", "fb_over_forward"), ("hooks_fb", "hooks_over_fb"),
                 ("hooks_fb_lo", "hooks_over_fb_lo"),
                 ("hooks_fb_hi", "hooks_over_fb_hi"),
                 ("all_fb", "all_over_fb")):
    glue(f"nb04_layer_{key}", float(lr[col]), display=False)
glue("nb04_layer_loop_speedup", float(lr.loop_over_hooks), display=False)
glue("nb04_layer_loop_all_speedup", float(lr.loop_over_all), display=False)
glue("nb04_layer_repeats", int(layer_rows.repeats.iloc[0]), display=False)

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
# backward costs {glue:text}`nb04_layer_fb:.1f`× the forward pass. The per-sample norms of every
# layer by hooks cost {glue:text}`nb04_layer_hooks_fb:.2f`× that forward + backward, plain
# `torch.func` {glue:text}`nb04_layer_all_fb:.2f`×; the batch-1 loop (timed on
# {glue:text}`nb04_layer_loop_images` images) is {glue:text}`nb04_layer_loop_speedup:.1f`× slower
# than hooks and {glue:text}`nb04_layer_loop_all_speedup:.1f`× slower than `torch.func`. Over
# the {glue:text}`nb04_layer_repeats` repeats, the hooks cost
# {glue:text}`nb04_layer_hooks_fb_lo:.2f`–{glue:text}`nb04_layer_hooks_fb_hi:.2f`× one forward +
# backward (fastest hooks run ÷ slowest forward + backward, and the converse). The spread of
# every path over the repeats is drawn in {numref}`fig-cost`.

# %% [markdown]
# (sec-cost-gpu)=
# ## On a GPU
#
# `benchmarks/device_check.sh` is the one prepared script for a GPU: every benchmark end to end,
# the identities in float64, `torchrun` extraction, and this cost benchmark at batch 1 and 256.
# Its recorded results live in `results/device/` (committed, with the device name and versions);
# this section shows them beside the CPU numbers above, and says what is still missing.

# %% tags=["remove-cell"]
gpu_dir = Path(DEVICE_RESULTS)
found = {n: gpu_dir / f"{n}.csv"
         for n in ("runs", "environment", "steps")}
found = {n: pd.read_csv(f) for n, f in found.items() if f.is_file()}
runs, steps = found.get("runs"), found.get("steps")
gpu_env = found["environment"].iloc[0] if "environment" in found else None
gpu_cost = [pd.read_csv(f)
            for f in sorted(gpu_dir.glob("score_cost_b*.csv"))]


todo = steps[steps.status != "ok"] if steps is not None else None
notes = []
if todo is not None and not todo.empty:
    check = todo.step.str.startswith("verify")
    if (~check).any():
        notes.append("Not recorded on a GPU: " + "; ".join(
            f"{step_label(r.step)} ({r.status})"
            for r in todo[~check].itertuples()) + ".")
    if check.any():
        notes.append(
            "The identity check in float64 on the GPU (verify) failed in "
            "the recorded run and has not been re-run since (its code has "
            "changed), so no GPU identity check is reported here; "
            f"see {str(gpu_dir).removeprefix('../')}/steps.csv.")
glue("nb04_gpu_missing", " ".join(notes), display=False)
# the float64 checks the GPU run recorded (verify_*.csv), in one sentence
checks = recorded_checks(gpu_dir)
last_checks = checks[checks.check == "last layer"]
layer_checks = checks[checks.check == "every layer"]
said = []
if len(last_checks):
    said.append(
        f"the last-layer closed forms match autograd to "
        f"{last_checks.worst.max():.0e} in units of V ({len(last_checks)} models)")
if len(layer_checks):
    said.append(
        "the per-sample gradient norms of every parameter tensor ("
        + ", ".join(f"{r.rows} of {model_name(r.name)}"
                    for r in layer_checks.itertuples())
        + f") match the batch-1 loop to {layer_checks.worst.max():.0e}, relative")
glue("nb04_gpu_verify",
     f"In float64 on the {gpu_env.device_name}, " + "; ".join(said) + "."
     if said and gpu_env is not None else
     "No float64 identity check on a GPU is recorded.", display=False)
if runs is None or gpu_env is None:
    glue("nb04_gpu_runs",
         "No GPU run is recorded in this copy of the study.",
         display=False)
else:
    ok = runs[runs.status == "ok"]
    cold, warm = ok.seconds_cold, ok.seconds_warm
    glue("nb04_gpu_runs",
         f"On one {gpu_env.device_name} (torch {gpu_env.torch}), "
         f"{len(ok)} benchmarks ran end to end "
         f"({', '.join(map(short_pair, ok.benchmark))}): "
         f"{cold.min():.0f}–{cold.max():.0f} s each with feature "
         f"extraction, {warm.min():.0f}–{warm.max():.0f} s from the caches.",
         display=False)


gpu_layer = [t for t in gpu_cost if set(LAYER_PATHS) <= set(t.path)]
if gpu_layer:  # the largest batch: at batch 1 there is nothing to batch
    t = max(gpu_layer, key=lambda t: t.batch.iloc[0])
    b = int(t.batch.iloc[0])
    own_loop = "per_layer_loop" in set(t.path)
    g = layer_ratios(t, loop="per_layer_loop" if own_loop
                     else "gradnorm_published").iloc[0]
    text = (
        f"On the {t.device_name.iloc[0]} at batch {b}, the per-sample norms "
        f"of every layer of {tables.model_label(g.model)} cost "
        f"{g.hooks_over_fb:.1f}× one batched forward + backward by hooks "
        f"(on {here} above: {lr.hooks_over_fb:.2f}×) and "
        f"{g.all_over_fb:.1f}× by plain torch.func, and run "
        f"{g.loop_over_hooks:.1f}× faster than "
        + ("the all-layer batch-1 loop." if own_loop else
           "GradNorm's published batch-1 loop (whose backward fills every "
           "gradient but takes no norms, so the speed-up over an all-layer "
           "batch-1 loop is at least this)."))
    one = [u for u in gpu_layer if u.batch.iloc[0] == 1]
    chunks = -(-b // LAYER_CHUNK)
    hooks_chunk = ms_per_call(t, g.model, "per_layer_hooks") / chunks
    fb_call = ms_per_call(t, g.model, "forward_backward")
    if one and chunks > 1:
        hooks_one = ms_per_call(one[0], g.model, "per_layer_hooks")
        text += (
            f" The batched forward + backward of all {b} images takes "
            f"{fb_call:.1f} ms; the hooks take {hooks_chunk:.1f} ms per "
            f"chunk of {LAYER_CHUNK} images and {hooks_one:.1f} ms for a "
            "single image.")
        if hooks_one > hooks_chunk / 2:  # most of a chunk's time is fixed
            text += (
                " Their time thus goes with the number of chunks, not of "
                "images: the per-layer rebuild is many small operations, "
                "each with a fixed cost that the cheap batched backward of "
                "a GPU does not hide.")
    glue("nb04_gpu_layer", text, display=False)
else:
    glue("nb04_gpu_layer",
         "No per-layer timing on a GPU is recorded: how much faster than the "
         "batch-1 loop the batched all-layer paths run on a GPU is not "
         "measured here.", display=False)

# closed forms from cached features on the GPU, smallest and largest batch
text = ""
if len(gpu_cost) >= 2:
    lo_t = min(gpu_cost, key=lambda u: u.batch.iloc[0])
    hi_t = max(gpu_cost, key=lambda u: u.batch.iloc[0])
    m = str(lo_t.model.iloc[0])
    b_lo, b_hi = int(lo_t.batch.iloc[0]), int(hi_t.batch.iloc[0])
    cf = "closed_form_scoring_only"
    vm = "vmap_head_scoring_only"
    cf_lo, cf_hi, vm_lo, vm_hi = (
        path_value(u, m, p, "ratio_to_forward")
        for p in (cf, vm) for u in (lo_t, hi_t))
    slower = cf_lo > vm_lo and cf_hi > vm_hi
    on_cpu = ratio.loc[cf, m] > ratio.loc[vm, m] if m in ratio else None
    text = (
        f"From cached features on the GPU, every closed form costs "
        f"{cf_lo:.2f}× a {tables.model_label(m)} forward pass at "
        f"batch {b_lo} and {cf_hi:.2f}× at batch {b_hi}, the "
        f"per-sample head gradient by vmap {vm_lo:.2f}× and {vm_hi:.2f}×"
        + (" (on the CPU above the closed forms are the cheaper)"
           if slower and on_cpu is False else "") + ". ")
    call_lo, call_hi = ms_per_call(lo_t, m, cf), ms_per_call(hi_t, m, cf)
    text += (f"One call of the closed forms takes {call_lo:.1f} ms for "
             f"{b_lo} image{'s' * (b_lo > 1)} and {call_hi:.1f} ms "
             f"for {b_hi}")
    if b_hi >= 10 * b_lo and call_hi < 2 * call_lo:
        text += (": the time is a fixed cost per call, not work per image "
                 f"— the many small operations of {len(ALL_CLOSED_FORM)} "
                 "scores, whose launch overhead dominates at this size.")
    else:
        text += "."
glue("nb04_gpu_cf", text, display=False)
settings = [cost.assign(
    setting=f"{here}, " + ("recorded" if COST_CSV else "measured here"))]
settings += [t.assign(setting=f"GPU, batch {t.batch.iloc[0]}")
             for t in gpu_cost]
glue("nb04_gpu_cost",
     "The cost benchmark's GPU rows are in the tables and the figure "
     "below, beside the CPU rows." if gpu_cost else
     "The cost benchmark's GPU rows (batch 1 and 256) are not recorded "
     "yet: the GPU run stopped before that step, so every ratio on this "
     "page is measured on the CPU.", display=False)

# %% [markdown]
# {glue:text}`nb04_gpu_runs` {glue:text}`nb04_gpu_cost` {glue:text}`nb04_gpu_missing`
# {glue:text}`nb04_gpu_verify`
#
# {glue:text}`nb04_gpu_cf`
#
# {glue:text}`nb04_gpu_layer`

# %% tags=["hide-input"]
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
if runs is not None:
    named = runs[runs.status == "ok"].assign(
        benchmark=lambda d: d.benchmark.map(short_pair))
    named = named[["benchmark", "seconds_cold", "seconds_warm"]].rename(
        columns={"benchmark": "benchmark · model",
                 "seconds_cold": "with extraction (s)",
                 "seconds_warm": "from caches (s)"})
    display(tables.book_table(
        named.style.hide(axis="index").format(precision=0),
        "End-to-end runs on the GPU", numbers=False))

# %% tags=["hide-input"]
fig = plots.cost_figure(every, panel="setting")
glue("nb04_fig_cost", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} nb04_fig_cost
# :name: fig-cost
#
# Time per image of each way of scoring divided by the forward pass at the same batch size
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
# stand-in for the number of kernel launches.

# %%
with torch.inference_mode():
    h_r20, f_r20 = build_model("resnet20").to(dev).eval().forward_features(
        torch.randn(BATCH_RESNET20, 3, 32, 32, device=dev))
ops = scoring_ops(h_r20, f_r20)

# %% tags=["remove-cell"]
calls = ops.pivot(index="members", columns="path", values="operator_calls")
syncs = ops.pivot(index="members", columns="path", values="host_syncs")
n_all, n_few = len(ALL_CLOSED_FORM), len(FEW_MEMBERS)
for key, path in (("fused", "fused"), ("pm", "per_member")):
    glue(f"nb04_{key}_ops_all", f"{int(calls.loc[n_all, path]):,}", display=False)
    glue(f"nb04_{key}_ops_few", f"{int(calls.loc[n_few, path]):,}", display=False)
    glue(f"nb04_{key}_syncs_all", f"{int(syncs.loc[n_all, path]):,}", display=False)
glue("nb04_fused_members", n_all, display=False)
glue("nb04_fused_batch", int(ops.batch.iloc[0]), display=False)
pm, cf = "closed_form_per_member", "closed_form"
fused_text = ""
if f"{pm}_scoring_only" in ratio.index:
    r20 = ratio["resnet20"]
    fused_text = (
        f"Timed on {here} from cached features (ResNet-20, batch "
        f"{int(cost[cost.model == 'resnet20'].batch.iloc[0])}), all members "
        f"in one call cost {tables.ratio_text(r20[cf + '_scoring_only'])}× "
        f"the forward pass and one member at a time "
        f"{tables.ratio_text(r20[pm + '_scoring_only'])}×, "
        f"{r20[pm + '_scoring_only'] / r20[cf + '_scoring_only']:.1f}× as "
        "much (end to end, with the forward pass: the first table).")
glue("nb04_fused_cpu", fused_text, display=False)
fused_gpu = [t for t in gpu_cost if pm in set(t.path)]
if fused_gpu:
    t = max(fused_gpu, key=lambda u: u.batch.iloc[0])
    gm = str(t.model.iloc[0])
    g_text = (
        f"On the {t.device_name.iloc[0]} at batch {int(t.batch.iloc[0])}, "
        f"forward pass and every closed form take "
        f"{path_value(t, gm, cf, 'ratio_to_forward'):.2f}× the forward pass "
        f"fused and {path_value(t, gm, pm, 'ratio_to_forward'):.2f}× one "
        "member at a time.")
elif gpu_cost:
    g_text = (
        "The GPU rows of the tables and the figure above were "
        "recorded before this change: their closed-form rows are the "
        "per-member path, one call per member, and stay so until "
        "benchmarks/device_check.sh is run again on a GPU.")
else:
    g_text = "No GPU timing of the fused call is recorded."
glue("nb04_fused_gpu", g_text, display=False)

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
# {glue:text}`nb04_pm_syncs_all` host syncs. {glue:text}`nb04_fused_cpu`
# {glue:text}`nb04_fused_gpu`

# %% [markdown]
# ## Scoring from cached features
#
# Once $h$ and the logits are cached, the whole closed-form family — every $U\cdot V$ member, the
# baselines that need only the logits and every gradient closed form — is a few passes over two
# arrays.

# %%
g = grid_cost(N_GRID, GRID_CLASSES, GRID_DIM, repeats=REPEATS, seed=SEED)

# %% tags=["remove-cell"]
glue("nb04_grid_seconds", g["seconds"], display=False)
glue("nb04_grid_n", f"{g['n']:,}", display=False)
glue("nb04_grid_members", g["members"], display=False)
glue("nb04_grid_classes", f"{g['classes']:,}", display=False)
glue("nb04_grid_dim", f"{g['dim']:,}", display=False)

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
#   pass alone on ResNet-50. The recorded GPU timings are in {ref}`sec-cost-gpu`.
# * A per-sample gradient need not be slow: batched over samples with `torch.func`, the head
#   gradient costs {glue:text}`nb04_r50_vmap:.2f`× the forward pass on ResNet-50 — but it still only
#   reproduces a closed form.
# * Below the head, exact per-sample norms of every layer cost
#   {glue:text}`nb04_layer_hooks_fb:.2f`× one batched forward + backward
#   ({glue:text}`nb04_layer_hooks_fb_lo:.2f`–{glue:text}`nb04_layer_hooks_fb_hi:.2f`× over the
#   repeats) on {glue:text}`nb04_layer_model`, {glue:text}`nb04_layer_loop_speedup:.1f`× faster
#   than the batch-1 loop.
