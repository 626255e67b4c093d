"""What each way of scoring costs, measured side by side on the same model, inputs and device.

Used by ``benchmarks/score_cost.py`` (full sizes) and the chapter *Cost* (small sizes). Every
path returns per-image scores so that its work cannot be skipped; times are medians over
repeats after a warm-up, divided by the number of images.

Paths:

* ``forward`` — the batched forward pass (h and logits): the limit every score is held against;
* ``gradnorm_published`` — one image at a time, ``loss.backward()`` through the whole network,
  the head's ``.grad`` read (what the GradNorm reference code does);
* ``loop_head_only`` — one image at a time, the gradient of the head only;
* ``vmap_head`` — batched forward, then batched per-sample head gradients (``torch.func``);
* ``closed_form`` — batched forward, then every U·V member, baseline and gradient closed form in one
  fused call (:func:`ood_lib.scores.score_matrix`; ``closed_form_scoring_only``: the scoring alone,
  from features already computed);
* ``closed_form_per_member`` / ``closed_form_per_member_scoring_only`` — the same scores one member
  at a time (:func:`ood_lib.scores.per_member_scores`, each with its own finiteness check): the
  path the fused call replaces;
* ``vmap_head_scoring_only`` — the per-sample head gradients alone;
* ``exgrad_loop`` — exact ExGrad by autograd: one image at a time, C head-gradient passes;
* ``exgrad_closed_form`` — batched forward, then ExGrad's closed form.

Per-layer paths (:data:`LAYER_PATHS`, timed only when asked: they differentiate every parameter):

* ``forward_backward`` — one batched forward and one backward of the summed GradNorm loss (every
  parameter's ``.grad``): the yardstick for per-sample gradients of all layers;
* ``per_layer_all`` — per-sample ‖∇_θ‖₁ and ‖∇_θ‖₂² of every parameter tensor θ, batched with
  ``torch.func`` (:func:`ood_lib.gradients.layers.layer_grad_norms`, chunks of :data:`LAYER_CHUNK` images);
* ``per_layer_hooks`` — the same norms from one batched forward + backward per chunk,
  rebuilt from each layer's input and back-propagated signal (``method="hooks"``);
* ``per_layer_hooks_l1`` — the same with ‖∇_θ‖₁ alone (:data:`LAYER_EXTRA_PATHS`: what the second
  norm costs; ``benchmarks/layer_cost.py`` times it).

Compiled (:data:`COMPILE_PATHS`, timed only when asked: the first call compiles):

* ``closed_form_compiled_scoring_only`` — the fused call through ``torch.compile``.

:func:`scoring_ops` counts the operator calls and host syncs of one scoring call (fused and per
member, for :data:`FEW_MEMBERS` and for every member): the proxy for kernel launches on a GPU.

Their batch-1 reference (:data:`LAYER_LOOP_PATHS`, also timed only when asked):

* ``per_layer_loop`` — the same norms one image at a time, ``loss.backward()`` through the whole
  network and the norms of every ``.grad`` (``method="loop"``, on ``loop_images`` images).

:func:`layer_ratios` turns these rows into the ratios the chapter *Cost* quotes.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from typing import Callable, Iterator

import pandas as pd
import torch
import torch.nn.functional as F

from .._checks import OODInputError
from ..gradients.autograd import gradient_score, head_gradient_score
from ..gradients.layers import layer_grad_norms
from ..scores.closed_forms import SCORES, per_member_scores, score_matrix, scores

PATHS = ("forward", "closed_form", "closed_form_scoring_only", "closed_form_per_member",
         "closed_form_per_member_scoring_only", "vmap_head", "vmap_head_scoring_only",
         "gradnorm_published", "loop_head_only", "exgrad_loop", "exgrad_closed_form")
COMPILE_PATHS = ("closed_form_compiled_scoring_only",)
LAYER_PATHS = ("forward_backward", "per_layer_all", "per_layer_hooks")
LAYER_LOOP_PATHS = ("per_layer_loop",)
LAYER_EXTRA_PATHS = ("per_layer_hooks_l1",)
KNOWN_PATHS = PATHS + LAYER_PATHS + LAYER_LOOP_PATHS + LAYER_EXTRA_PATHS + COMPILE_PATHS
# a reference level for all-layer per-sample gradient norms: this many batched forward + backward
# (``layer_ratios`` says where the spread over the repeats falls against it)
LAYER_COST_AIM = 1.5
# images per batched forward + backward of the per-layer paths (``per_layer_all``/``per_layer_hooks``)
LAYER_CHUNK = 64
ALL_CLOSED_FORM = [n for n, s in SCORES.items()]
# ten members of every kind (grid, baselines, gradient forms, a flipped reading): the small call
FEW_MEMBERS = ("l1*msp", "l2*pu_l1", "linf*kl_u", "l2sq*p_l2sq", "msp", "maxlogit", "energy", "gradnorm",
               "exgrad", "exgrad_flipped")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device=None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    dev = torch.device("cpu") if device is None else torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _forward(model, x):
    with torch.inference_mode():
        return model.forward_features(x)


def _published_gradnorm(model, x, T: float = 1.0):
    """GradNorm as its reference code computes it: batch size 1, full backward, all-ones target."""
    out = torch.empty(len(x))
    for p in model.parameters():
        p.requires_grad_(True)
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        logits = model(x[i : i + 1])
        loss = torch.sum(-F.log_softmax(logits / T, dim=-1))
        loss.backward()
        out[i] = model.head.weight.grad.abs().sum()
    return out


def _forward_backward(model, x, T: float = 1.0):
    """One batched forward and backward of Σ_i KL(u ‖ p_i): every parameter's .grad, summed over images."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        logp = F.log_softmax(model(x) / T, dim=-1)
        (-logp.mean(dim=-1)).sum().backward()  # KL(u ‖ p) up to a constant
    return next(model.parameters()).grad


def path_functions(model, x, loop_images: int = 8, exgrad_images: int = 2,
                   chunk: int = LAYER_CHUNK) -> dict[str, Callable[[], object]]:
    """The timed callables, each over all of ``x`` (the loops over its first few images; the
    per-layer paths in forward + backward passes of ``chunk`` images)."""
    n_small = min(len(x), loop_images)
    h0, f0 = _forward(model, x)
    h0, f0 = h0.clone(), f0.clone()

    def closed_all():
        h, f = _forward(model, x)
        return score_matrix(ALL_CLOSED_FORM, h, f)

    def per_member_all():
        h, f = _forward(model, x)
        return per_member_scores(ALL_CLOSED_FORM, h, f)

    def exgrad_cf():
        h, f = _forward(model, x)
        return scores(["exgrad"], h, f)

    def vmap_head():
        h, _ = _forward(model, x)
        return head_gradient_score("gradnorm", model.head, h.clone())

    return {
        "forward": lambda: _forward(model, x),
        "closed_form": closed_all,
        "closed_form_scoring_only": lambda: score_matrix(ALL_CLOSED_FORM, h0, f0),
        "closed_form_per_member": per_member_all,
        "closed_form_per_member_scoring_only": lambda: per_member_scores(ALL_CLOSED_FORM, h0, f0),
        "closed_form_compiled_scoring_only": lambda: score_matrix(ALL_CLOSED_FORM, h0, f0, compile=True),
        "vmap_head": vmap_head,
        "vmap_head_scoring_only": lambda: head_gradient_score("gradnorm", model.head, h0),
        "gradnorm_published": lambda: _published_gradnorm(model, x[:n_small]),
        "loop_head_only": lambda: gradient_score("gradnorm", model, x[:n_small], method="loop"),
        "exgrad_loop": lambda: gradient_score("exgrad", model, x[:exgrad_images], method="loop"),
        "exgrad_closed_form": exgrad_cf,
        "forward_backward": lambda: _forward_backward(model, x),
        "per_layer_all": lambda: layer_grad_norms(model, x, chunk_size=chunk),
        "per_layer_hooks": lambda: layer_grad_norms(model, x, method="hooks", chunk_size=chunk),
        "per_layer_hooks_l1": lambda: layer_grad_norms(model, x, method="hooks", chunk_size=chunk, norms=("l1",)),
        "per_layer_loop": lambda: layer_grad_norms(model, x[:n_small], method="loop"),
    }


def score_cost(
    model: torch.nn.Module, x: torch.Tensor, *, label: str, repeats: int = 5,
    paths: tuple[str, ...] = PATHS, loop_images: int = 8, exgrad_images: int = 2, chunk: int = LAYER_CHUNK,
) -> pd.DataFrame:
    """Median milliseconds per image of each path, and its ratio to the batched forward pass.

    The paths are timed round-robin (one run of each, ``repeats`` times over) after a warm-up
    of each, so that drift in the machine's speed falls on all of them alike.
    """
    model = model.eval()
    dev = next(model.parameters()).device
    unknown = [n for n in paths if n not in KNOWN_PATHS]
    if unknown:
        raise OODInputError(f"unknown cost path(s) {', '.join(unknown)}; known: {', '.join(KNOWN_PATHS)}")
    fns = path_functions(model, x, loop_images, exgrad_images, chunk)
    n_small = min(len(x), loop_images)
    n_images = {"gradnorm_published": n_small, "loop_head_only": n_small, "per_layer_loop": n_small,
                "exgrad_loop": min(len(x), exgrad_images)}
    for name in paths:
        fns[name]()
    _sync(dev)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name in paths:
            times[name].append(median_seconds(fns[name], repeats=1, warmup=0, device=dev))
    rows = [
        {"model": label, "device": str(dev), "path": name, "batch": len(x), "images_timed": n_images.get(name, len(x)),
         "ms_per_image": 1e3 * statistics.median(times[name]) / n_images.get(name, len(x)),
         "ms_min": 1e3 * min(times[name]) / n_images.get(name, len(x)),
         "ms_max": 1e3 * max(times[name]) / n_images.get(name, len(x)), "repeats": repeats}
        for name in paths
    ]
    df = pd.DataFrame(rows)
    fwd = float(df.loc[df.path == "forward", "ms_per_image"].iloc[0]) if "forward" in paths else float("nan")
    df["ratio_to_forward"] = df.ms_per_image / fwd
    return df


@contextlib.contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the duration: the profiler's C++ side logs each start and
    stop there, below Python's sys.stderr, and a notebook would show those lines as output."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def operator_calls(fn: Callable[[], object]) -> dict[str, int]:
    """ATen operator calls (nested ones included) and host syncs (``aten::_local_scalar_dense``: on
    a GPU each waits for the device) of one call of ``fn``, after a warm-up call, from
    ``torch.profiler`` on the CPU side: the proxy for kernel launches."""
    from torch.profiler import ProfilerActivity, profile  # imported here: importing ood_lib does nothing

    fn()
    with _quiet_stderr_fd(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()]
    return {"operator_calls": sum(n.startswith("aten::") for n in names),
            "host_syncs": names.count("aten::_local_scalar_dense")}


def scoring_ops(h: torch.Tensor, f: torch.Tensor) -> pd.DataFrame:
    """:func:`operator_calls` of one scoring call from (h, logits), fused (``score_matrix``) and
    per member (``per_member_scores``), for :data:`FEW_MEMBERS` and for every closed form."""
    rows = []
    for members in (list(FEW_MEMBERS), ALL_CLOSED_FORM):
        for path, fn in (("fused", score_matrix), ("per_member", per_member_scores)):
            n = operator_calls(lambda: fn(members, h, f))
            rows.append({"device": str(f.device), "batch": len(f), "path": path, "members": len(members), **n})
    return pd.DataFrame(rows)


def layer_ratios(df: pd.DataFrame, loop: str = "per_layer_loop") -> pd.DataFrame:
    """Per model (and device) timed on the per-layer paths: what all-layer per-sample gradient
    norms cost, as ratios of median times per image (chapter *Cost*).

    Columns: ``fb_over_forward`` (forward + backward ÷ forward, NaN without a ``forward`` row),
    ``hooks_over_fb`` and ``all_over_fb`` (``per_layer_hooks`` / ``per_layer_all`` ÷
    ``forward_backward``), ``loop_over_hooks`` and ``loop_over_all`` (the batch-1 path ``loop`` ÷
    each batched one: the speed-up); ``hooks_over_fb_lo``/``_hi`` bound ``hooks_over_fb`` by the
    spread over the repeats (fastest hooks run ÷ slowest forward + backward, and the converse;
    NaN without ``ms_min``/``ms_max``), and ``aim`` says where :data:`LAYER_COST_AIM` falls:
    ``"met"`` (the whole spread at or below it), ``"missed"`` (all above) or ``"unsettled"``
    (inside the spread); without a spread the median decides. ``loop`` may name
    ``gradnorm_published`` for tables timed without ``per_layer_loop``: its full backward fills
    every ``.grad`` but takes no norms, so its speed-ups are lower bounds.
    """
    need = {"model", "path", "ms_per_image"}
    if not need <= set(df.columns):
        raise OODInputError(f"cost table lacks column(s) {', '.join(sorted(need - set(df.columns)))}")
    if loop not in ("per_layer_loop", "gradnorm_published"):
        raise OODInputError(f"loop must be 'per_layer_loop' or 'gradnorm_published', got {loop!r}")
    keys = ["model"] + (["device"] if "device" in df.columns else [])
    spread = {"ms_min", "ms_max"} <= set(df.columns)
    rows = []
    for key, g in df.groupby(keys, sort=False):
        ms = g.groupby("path", sort=False).ms_per_image.median()
        if not set(LAYER_PATHS) & set(ms.index):
            continue
        missing = [p for p in LAYER_PATHS + (loop,) if p not in ms.index]
        if missing:
            raise OODInputError(f"{'/'.join(map(str, key))}: per-layer rows lack path(s) {', '.join(missing)}")
        fb, hooks, every = ms["forward_backward"], ms["per_layer_hooks"], ms["per_layer_all"]
        lo = hi = hooks / fb
        if spread:
            lo_ms, hi_ms = g.groupby("path").ms_min.min(), g.groupby("path").ms_max.max()
            lo = lo_ms["per_layer_hooks"] / hi_ms["forward_backward"]
            hi = hi_ms["per_layer_hooks"] / lo_ms["forward_backward"]
        rows.append({**dict(zip(keys, key)), "loop": loop,
                     "fb_over_forward": fb / ms["forward"] if "forward" in ms.index else float("nan"),
                     "hooks_over_fb": hooks / fb, "all_over_fb": every / fb,
                     "loop_over_hooks": ms[loop] / hooks, "loop_over_all": ms[loop] / every,
                     "hooks_over_fb_lo": lo if spread else float("nan"),
                     "hooks_over_fb_hi": hi if spread else float("nan"),
                     "aim": "met" if hi <= LAYER_COST_AIM else "missed" if lo > LAYER_COST_AIM else "unsettled"})
    if not rows:
        raise OODInputError(f"no model in the cost table was timed on the per-layer paths {', '.join(LAYER_PATHS)}")
    return pd.DataFrame(rows)


def grid_cost(n: int = 100_000, classes: int = 1000, dim: int = 2048, repeats: int = 3, seed: int = 0,
              dtype: torch.dtype = torch.float32) -> dict:
    """Seconds to compute every closed-form score (U·V grid, baselines, gradient closed forms)
    from cached (h, logits) of ``n`` samples."""
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(n, dim, generator=g).to(dtype)
    f = (4 * torch.randn(n, classes, generator=g)).to(dtype)
    sec = median_seconds(lambda: scores(ALL_CLOSED_FORM, h, f), repeats=repeats)
    return {"n": n, "classes": classes, "dim": dim, "members": len(ALL_CLOSED_FORM), "seconds": sec}

