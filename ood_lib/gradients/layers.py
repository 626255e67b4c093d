"""Exact per-sample gradient norms of every parameter tensor (and of the input), for a whole batch.

For a loss ℓ(f(x)) of the logits — KL(u ‖ p) (GradNorm's loss), the all-ones target, CE with the
predicted label or CE with a given label — :func:`layer_grad_norms` returns, for each parameter
tensor θ and each image, ‖∇_θ ℓ‖₁ and ‖∇_θ ℓ‖₂² (with ``wrt_input=True`` also ‖∇ₓ ℓ‖, in pixel
units when the normalisation std is given). Three paths give the same numbers:

* ``method="hooks"`` (the fast one): one batched forward and one backward of the summed loss per
  chunk, with the per-sample gradients rebuilt from each layer's input and back-propagated signal
  (:mod:`ood_lib.gradients.signals`): nn.Linear by its outer-product closed form (nothing
  materialised), nn.Conv2d as one batched product per image (the weight gradient of a
  convolution with one group per image), eval-mode nn.BatchNorm2d from its input. Each layer's
  norms are taken inside the backward the moment its δ arrives, and the backward forms no
  parameter gradient of the whole batch: one layer's per-sample gradients exist at a time. For
  models whose parameters all sit in plain layers of these three kinds (:func:`fastest_method`).
* ``method="vmap"``: ``torch.func.vmap(grad(loss))`` over ``functional_call``, chunked; the norms
  are taken inside the vmapped function. Any model. ``torch.func`` is used because the maintained
  per-sample-gradient libraries do not take these models: Opacus 1.6 refuses any model with
  BatchNorm layers (even in eval mode) and BackPACK 1.7.1's module converter fails on the CIFAR
  ResNet-20 as written.
* ``method="loop"``: the reference — one image at a time, a plain ``loss.backward()`` through the
  whole network, norms of every ``.grad``.

The model must be in eval mode: BatchNorm then uses its running statistics, each image's loss
depends on that image alone, and the per-sample gradient is well defined.

Closed forms below the head (chapter *Gradient scores and their closed forms*, section on depth):

* :func:`linear_closed_form` — any Linear layer y = W a + b: per sample ∇_W ℓ = δ aᵀ with
  δ = ∂ℓ/∂y, so ‖∇_W‖₁ = ‖δ‖₁‖a‖₁, ‖∇_W‖_F² = ‖δ‖₂²‖a‖₂², ∇_b = δ. One batched backward of the
  summed loss gives every δ at once (the images are independent in eval mode); a is kept by a hook.
* :func:`gap_conv_closed_form` — the last convolution before global average pooling, see there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import OODInputError
from .signals import (
    INPUT,
    LAYER_LOSSES,
    NORMS,
    capture_signals,
    channel_std,
    check_layer_inputs,
    loss_targets,
    module_grad_norms,
    not_rebuilt,
    sample_loss,
)

__all__ = ["INPUT", "LAYER_LOSSES", "METHODS", "NORMS", "call_order", "fastest_method", "gap_conv_closed_form",
           "last_conv_name", "layer_grad_norms", "linear_closed_form"]

METHODS = ("hooks", "vmap", "loop")


def _select(model: nn.Module, params: list[str] | None) -> dict[str, nn.Parameter]:
    named = dict(model.named_parameters())
    if INPUT in named:
        raise OODInputError(f"the model has a parameter named {INPUT!r}, the key of the input gradient")
    if params is None:
        return named
    chosen = {n: p for n, p in named.items() if any(n == k or n.startswith(k + ".") for k in params)}
    if not chosen:
        raise OODInputError(f"params={params!r} match no parameter; names start with: "
                            f"{', '.join(sorted({n.split('.')[0] for n in named}))}")
    return chosen


def _input_norms(gx: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """‖∇ₓ ℓ / std‖₁ and ‖∇ₓ ℓ / std‖₂² per image (∇ₓ: (N, C, …); std: (1, C, 1, …))."""
    g = (gx / std).flatten(1)
    return g.abs().sum(1), g.pow(2).sum(1)


def _loop(model, x, q, loss, T, chosen, std, wrt_input, progress) -> dict[str, dict[str, torch.Tensor]]:
    from tqdm.auto import tqdm

    keys = list(chosen) + ([INPUT] if wrt_input else [])
    out = {nm: {n: torch.empty(x.shape[0], dtype=x.dtype, device=x.device) for n in keys} for nm in NORMS}
    for i in tqdm(range(x.shape[0]), desc="batch-1 loop", disable=not progress, leave=False):
        model.zero_grad(set_to_none=True)
        xi = x[i : i + 1].detach().clone().requires_grad_(wrt_input)
        sample_loss(model(xi)[0], q[i], loss, T).backward()
        for n, p in chosen.items():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            out["l1"][n][i] = g.abs().sum()
            out["l2sq"][n][i] = g.pow(2).sum()
        if wrt_input:
            gx = xi.grad if xi.grad is not None else torch.zeros_like(xi)
            out["l1"][INPUT][i], out["l2sq"][INPUT][i] = (v[0] for v in _input_norms(gx, std))
    model.zero_grad(set_to_none=True)
    return out


def _vmap(model, x, q, loss, T, chosen, std, wrt_input, chunk_size, progress) -> dict[str, dict[str, torch.Tensor]]:
    from torch.func import functional_call, grad, vmap
    from tqdm.auto import tqdm

    theta = {n: p.detach() for n, p in chosen.items()}
    rest = {n: p.detach() for n, p in model.named_parameters() if n not in chosen}
    buffers = dict(model.named_buffers())

    def norms(th, xi, qi):
        def loss_fn(th_, x_):
            return sample_loss(functional_call(model, ({**rest, **th_}, buffers), (x_[None],))[0], qi, loss, T)

        if not wrt_input:
            return {n: torch.stack([t.abs().sum(), t.pow(2).sum()]) for n, t in grad(loss_fn)(th, xi).items()}
        g, gx = grad(loss_fn, argnums=(0, 1))(th, xi)
        out = {n: torch.stack([t.abs().sum(), t.pow(2).sum()]) for n, t in g.items()}
        out[INPUT] = torch.stack([v[0] for v in _input_norms(gx[None], std)])
        return out

    batched = vmap(norms, in_dims=(None, 0, 0))
    parts = []
    for s in tqdm(range(0, x.shape[0], chunk_size), desc="batched", disable=not progress, leave=False):
        parts.append(batched(theta, x[s : s + chunk_size], q[s : s + chunk_size]))
    return {nm: {n: torch.cat([d[n][:, j] for d in parts]) for n in parts[0]} for j, nm in enumerate(NORMS)}


def _hooks(model, x, loss, labels, T, chosen, std, wrt_input, chunk_size, norms, progress
           ) -> dict[str, dict[str, torch.Tensor]]:
    from tqdm.auto import tqdm

    owners: dict[str, nn.Module] = {}
    for mn, m in model.named_modules():
        own = [f"{mn}.{pn}" if mn else pn for pn, _ in m.named_parameters(recurse=False)]
        if any(n in chosen for n in own):
            why = not_rebuilt(m)
            if why:
                raise OODInputError(f"method='hooks' cannot rebuild {mn or 'the model'}: it {why} (use method='vmap')")
            owners[mn] = m
    keys = list(chosen) + ([INPUT] if wrt_input else [])
    parts: dict[str, dict[str, list]] = {nm: {n: [] for n in keys} for nm in norms}
    copy: set[str] = set()  # outputs changed in place downstream, learnt on the first chunk

    def consume(mn: str, a: torch.Tensor, d: torch.Tensor) -> None:  # runs inside the backward
        for pn, values in module_grad_norms(mn, owners[mn], a, d, norms).items():
            n = f"{mn}.{pn}" if mn else pn
            if n in chosen:
                for nm, v in zip(norms, values):
                    parts[nm][n].append(v)

    for s in tqdm(range(0, x.shape[0], chunk_size), desc="hooks", disable=not progress, leave=False):
        ys = None if labels is None else labels[s : s + chunk_size]
        _, gx = capture_signals(model, x[s : s + chunk_size], loss, ys, T, owners, wrt_input, copy, consume)
        if wrt_input:
            for nm, v in zip(NORMS, _input_norms(gx, std)):
                if nm in parts:
                    parts[nm][INPUT].append(v)
    return {nm: {n: torch.cat(parts[nm][n]) for n in keys} for nm in norms}


def fastest_method(model: nn.Module, params: list[str] | None = None) -> str:
    """``"hooks"`` where every layer owning a chosen parameter is rebuilt from its signals, else ``"vmap"``."""
    chosen = set(_select(model, params))
    for mn, m in model.named_modules():
        own = [f"{mn}.{pn}" if mn else pn for pn, _ in m.named_parameters(recurse=False)]
        if any(n in chosen for n in own) and not_rebuilt(m):
            return "vmap"
    return "hooks"


def layer_grad_norms(
    model: nn.Module,
    x: Any,
    *,
    loss: str = "uniform_kl",
    labels: Any = None,
    temperature: float = 1.0,
    params: list[str] | None = None,
    method: str = "vmap",
    chunk_size: int = 16,
    wrt_input: bool = False,
    input_std: float | Sequence[float] | None = None,
    norms: Sequence[str] = NORMS,
    progress: bool = False,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-image ‖∇_θ ℓ‖₁ and ‖∇_θ ℓ‖₂² for every parameter tensor θ: ``{norm: {name: (N,)}}``.

    ``norm`` is ``"l1"`` or ``"l2sq"``; ``name`` runs over ``model.named_parameters()`` (or those
    whose name equals or starts with an entry of ``params``). ``loss`` is a key of
    :data:`LAYER_LOSSES`, at temperature T: ℓ = KL(u ‖ softmax(f/T)) or −Σ q log softmax(f/T).
    With ``wrt_input`` the key :data:`INPUT` holds ‖∇ ℓ‖ w.r.t. the input pixels: the model's
    input is x = (pixel − mean)/std, so ∂ℓ/∂pixel = (∂ℓ/∂x)/std (``input_std``: per channel, or
    one number; None = 1). ``norms``: the norms to return (a subset of :data:`NORMS`; the hooks
    path then computes only those). ``method``: ``"hooks"`` (fastest; plain Linear/Conv2d/BatchNorm2d
    layers only), ``"vmap"`` (any model) or ``"loop"`` (the batch-1 reference).
    Run a float64 model on float64 inputs for exact comparisons.
    """
    if method not in METHODS:
        raise OODInputError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise OODInputError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    norms = tuple(norms)
    if not norms or any(nm not in NORMS for nm in norms):
        raise OODInputError(f"norms must be a non-empty subset of {NORMS}, got {norms!r}")
    x, labels, T = check_layer_inputs(model, x, loss, labels, temperature)
    if x.ndim < 2:
        raise OODInputError(f"x must be a batch (N, C, …), got shape {tuple(x.shape)}")
    std = channel_std(input_std, x.shape[1], x) if wrt_input else None
    chosen = _select(model, params)
    if method == "hooks":
        return _hooks(model, x, loss, labels, T, chosen, std, wrt_input, chunk_size, norms, progress)
    with torch.no_grad():
        q = loss_targets(model(x), loss, labels)
    if method == "loop":
        out = _loop(model, x, q, loss, T, chosen, std, wrt_input, progress)
    else:
        with torch.no_grad():
            out = _vmap(model, x, q, loss, T, chosen, std, wrt_input, chunk_size, progress)
    return {nm: out[nm] for nm in norms}


def linear_closed_form(
    model: nn.Module, x: Any, *, loss: str = "uniform_kl", labels: Any = None, temperature: float = 1.0,
) -> dict[str, dict[str, torch.Tensor]]:
    """‖∇‖₁ and ‖∇‖₂² of every nn.Linear's weight and bias, per image, with no per-sample backward.

    ∇_W ℓ = δ aᵀ, so ‖∇_W‖₁ = ‖δ‖₁ ‖a‖₁ and ‖∇_W‖_F² = ‖δ‖₂² ‖a‖₂²; ∇_b ℓ = δ. Same layout as
    :func:`layer_grad_norms` (parameter names ``<module>.weight``, ``<module>.bias``).
    """
    x, labels, T = check_layer_inputs(model, x, loss, labels, temperature)
    lin = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not lin:
        raise OODInputError(f"{type(model).__name__} has no nn.Linear layer")
    out: dict[str, dict[str, torch.Tensor]] = {"l1": {}, "l2sq": {}}
    for n, (a, d) in capture_signals(model, x, loss, labels, T, lin)[0].items():
        for pn, norms in module_grad_norms(n, lin[n], a, d).items():
            for nm, v in zip(NORMS, norms):
                out[nm][f"{n}.{pn}"] = v
    return out


def call_order(model: nn.Module, x: torch.Tensor, keep: Callable[[nn.Module], bool]) -> list[str]:
    """The names of the modules for which ``keep`` holds, once per call, in the order a forward pass
    of ``x[:1]`` calls them."""
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda *_a, n=n: order.append(n))  # returns None: the input stays
             for n, m in model.named_modules() if keep(m)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return order


def last_conv_name(model: nn.Module, x: torch.Tensor) -> str:
    """The name of the last nn.Conv2d called in a forward pass of ``x[:1]``."""
    order = call_order(model, x, lambda m: isinstance(m, nn.Conv2d))
    if not order:
        raise OODInputError(f"{type(model).__name__} has no nn.Conv2d layer")
    return order[-1]


def gap_conv_closed_form(
    model: nn.Module, x: Any, *, loss: str = "uniform_kl", labels: Any = None, temperature: float = 1.0,
    conv: str | None = None, rtol: float = 1e-9,
) -> dict[str, dict[str, torch.Tensor]]:
    """‖∇_W ℓ‖₁, ‖∇_W ℓ‖₂² of the last convolution before global average pooling, per image.

    Derivation. Let z = conv(a) (C_out channels, S = H·W positions), followed only by per-channel
    affine maps (eval-mode BatchNorm, scale s_c), additions of other tensors (residual) or
    concatenation, one ReLU (mask m_{c,σ} ∈ {0, 1}), the mean over positions and the head
    f = W_head h + b. Then δ_{c,σ} = ∂ℓ/∂z_{c,σ} = g_c m_{c,σ} / S with g = s ⊙ W_headᵀ(p − q)/T
    (p − q the loss's gradient w.r.t. the logits, times T): *spatially constant up to the mask*.
    With A_σ the unfolded input patch at position σ, ∇_W ℓ = Σ_σ δ_σ A_σᵀ, whose row c is
    g_c ā_c with ā_c = (1/S) Σ_{σ: m_{c,σ}=1} A_σ, the mean patch over the channel's active positions:

        ‖∇_W ℓ‖₁ = Σ_c |g_c| ‖ā_c‖₁,      ‖∇_W ℓ‖_F² = Σ_c g_c² ‖ā_c‖₂².

    What survives of the head's factorisation is a *sum* of per-channel products: ā depends on the
    image alone, g on the logits and the loss target through a C_out-vector. So it is not one
    product U(x)·V(p) (that would need ‖ā_c‖ constant over c, i.e. no mask and one scale), but every
    further loss target costs one C_out-vector, not one backward pass. Building ā costs one product
    (D × S)·(S × C_out) per image — as much as materialising the per-sample gradient; a ghost-norm
    Gram form Σ_{σ,τ}(δ_σ·δ_τ)(A_σ·A_τ) is no cheaper for L2 and has no L1 analogue.

    Here g and m are read off δ from one batched backward of the summed loss, and δ = g ⊙ m / S is
    checked to relative ``rtol``: an :class:`OODInputError` says when ``conv`` (default: the last
    Conv2d called) is not followed by global average pooling in this way. Keys ``<conv>.weight``
    (and ``<conv>.bias``, whose row c is g_c · (active positions)/S).
    """
    x, labels, T = check_layer_inputs(model, x, loss, labels, temperature)
    name = conv or last_conv_name(model, x)
    layer = dict(model.named_modules()).get(name)
    if not isinstance(layer, nn.Conv2d):
        raise OODInputError(f"conv={name!r} is not an nn.Conv2d of the model")
    if layer.groups != 1 or isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise OODInputError(f"{name}: only ungrouped, zero-padded convolutions with numeric padding")
    a, d = capture_signals(model, x, loss, labels, T, {name: layer})[0][name]
    N, C, H, W = d.shape
    S = H * W
    m = (d != 0).to(d.dtype)
    g = d.sum((2, 3)) * S / m.sum((2, 3)).clamp_min(1)  # (N, C): the constant value on the mask
    err = (d - g[:, :, None, None] * m / S).abs().amax((1, 2, 3))
    scale = (g.abs().amax(1) / S).clamp_min(torch.finfo(d.dtype).tiny)
    if bool((err > rtol * scale).any()):
        raise OODInputError(f"the signal back into {name} is not spatially constant up to a mask (worst "
                            f"relative deviation {float((err / scale).max()):.1e}): it is not followed by "
                            "per-channel maps, one ReLU and global average pooling")
    A = F.unfold(a, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    abar = torch.bmm(A, m.flatten(2).transpose(1, 2)) / S  # (N, D, C): ā_c as columns
    out = {"l1": {f"{name}.weight": (g.abs() * abar.abs().sum(1)).sum(1)},
           "l2sq": {f"{name}.weight": (g.pow(2) * abar.pow(2).sum(1)).sum(1)}}
    if layer.bias is not None:
        gb = g * m.sum((2, 3)) / S
        out["l1"][f"{name}.bias"] = gb.abs().sum(1)
        out["l2sq"][f"{name}.bias"] = gb.pow(2).sum(1)
    return out
