"""Exact per-sample gradient norms of every parameter tensor, for a whole batch.

For a loss ℓ(f(x)) of the logits — KL(u ‖ p) (GradNorm's loss), the all-ones target, CE with the
predicted label or CE with a given label — :func:`layer_grad_norms` returns, for each parameter
tensor θ and each image, ‖∇_θ ℓ‖₁ and ‖∇_θ ℓ‖₂². Three paths give the same numbers:

* ``method="vmap"``: ``torch.func.vmap(grad(loss))`` over ``functional_call``, chunked over the
  batch (``chunk_size``) to bound memory; the norms are taken inside the vmapped function, so no
  more than one chunk of per-sample gradients ever exists. ``torch.func`` is used because the
  maintained per-sample-gradient libraries do not take these models: Opacus 1.6 refuses any model
  with BatchNorm layers (even in eval mode) and BackPACK 1.7.1's module converter fails on the
  CIFAR ResNet-20 as written.
* ``method="hooks"``: one batched forward and one backward of the summed loss per chunk, with
  the per-sample gradients rebuilt from each layer's input a and back-propagated signal δ (rows of
  the batch are independent in eval mode): nn.Linear ‖δ‖‖a‖ (see below); nn.Conv2d
  Σ_σ δ_σ A_σᵀ (A_σ the input patch at position σ), the weight gradient of one convolution with a
  group per image (``torch.nn.grad.conv2d_weight``); eval-mode nn.BatchNorm2d ∇γ = Σ_σ δ_σ x̂_σ,
  ∇β = Σ_σ δ_σ. Only for models whose parameters all sit in these layers.
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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import OODInputError, as_float_tensor, check_temperature

__all__ = ["LAYER_LOSSES", "NORMS", "gap_conv_closed_form", "last_conv_name", "layer_grad_norms",
           "linear_closed_form"]

LAYER_LOSSES = {
    "uniform_kl": "KL(u ‖ p): GradNorm's loss",
    "ones": "Σ_k −log p_k: the all-ones target (GradNorm's released code)",
    "pred": "CE(f, argmax p): the predicted label",
    "label": "CE(f, y): a given label (pass labels=)",
}
NORMS = ("l1", "l2sq")


def _check(model: nn.Module, x: Any, loss: str, labels: Any, temperature: float) -> tuple:
    if loss not in LAYER_LOSSES:
        raise OODInputError(f"loss must be one of {', '.join(LAYER_LOSSES)}, got {loss!r}")
    if model.training:
        raise OODInputError("put the model in eval mode (model.eval()): per-sample gradients need "
                            "BatchNorm's running statistics")
    p0 = next(model.parameters(), None)
    if p0 is None:
        raise OODInputError("the model has no parameters")
    x = as_float_tensor(x, "x").to(device=p0.device, dtype=p0.dtype)
    if loss == "label":
        if labels is None:
            raise OODInputError("loss='label' needs labels= (one class index per image)")
        labels = torch.as_tensor(labels, device=p0.device).long().reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise OODInputError(f"labels has {labels.shape[0]} entries for {x.shape[0]} images")
    return x, labels, check_temperature(temperature)


def _targets(logits: torch.Tensor, loss: str, labels: torch.Tensor | None) -> torch.Tensor:
    """The target vector q (N, C) of each image's loss, fixed (no gradient flows through it)."""
    N, C = logits.shape
    if loss == "uniform_kl":
        return torch.full_like(logits, 1.0 / C)
    if loss == "ones":
        return torch.ones_like(logits)
    y = logits.detach().argmax(1) if loss == "pred" else labels
    if int(y.min()) < 0 or int(y.max()) >= C:
        raise OODInputError(f"labels must lie in [0, {C}), got range [{int(y.min())}, {int(y.max())}]")
    return F.one_hot(y, C).to(logits.dtype)


def _sample_loss(logits: torch.Tensor, q: torch.Tensor, loss: str, T: float) -> torch.Tensor:
    """ℓ per image (last dim = classes): KL(u ‖ p_T) or the cross-entropy −Σ q log p_T."""
    logp = F.log_softmax(logits / T, dim=-1)
    if loss == "uniform_kl":
        return (q * (q.log() - logp)).sum(-1)
    return -(q * logp).sum(-1)


def _select(model: nn.Module, params: list[str] | None) -> dict[str, nn.Parameter]:
    named = dict(model.named_parameters())
    if params is None:
        return named
    chosen = {n: p for n, p in named.items() if any(n == k or n.startswith(k + ".") for k in params)}
    if not chosen:
        raise OODInputError(f"params={params!r} match no parameter; names start with: "
                            f"{', '.join(sorted({n.split('.')[0] for n in named}))}")
    return chosen


def _loop(model, x, q, loss, T, chosen, progress) -> dict[str, dict[str, torch.Tensor]]:
    from tqdm.auto import tqdm

    out = {nm: {n: torch.empty(x.shape[0], dtype=x.dtype, device=x.device) for n in chosen} for nm in NORMS}
    for i in tqdm(range(x.shape[0]), desc="batch-1 loop", disable=not progress, leave=False):
        model.zero_grad(set_to_none=True)
        _sample_loss(model(x[i : i + 1])[0], q[i], loss, T).backward()
        for n, p in chosen.items():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            out["l1"][n][i] = g.abs().sum()
            out["l2sq"][n][i] = g.pow(2).sum()
    model.zero_grad(set_to_none=True)
    return out


def _vmap(model, x, q, loss, T, chosen, chunk_size, progress) -> dict[str, dict[str, torch.Tensor]]:
    from torch.func import functional_call, grad, vmap
    from tqdm.auto import tqdm

    theta = {n: p.detach() for n, p in chosen.items()}
    rest = {n: p.detach() for n, p in model.named_parameters() if n not in chosen}
    buffers = dict(model.named_buffers())

    def norms(th, xi, qi):
        def loss_fn(th_):
            return _sample_loss(functional_call(model, ({**rest, **th_}, buffers), (xi[None],))[0], qi, loss, T)

        g = grad(loss_fn)(th)
        return {n: torch.stack([t.abs().sum(), t.pow(2).sum()]) for n, t in g.items()}

    batched = vmap(norms, in_dims=(None, 0, 0))
    parts = []
    for s in tqdm(range(0, x.shape[0], chunk_size), desc="batched", disable=not progress, leave=False):
        parts.append(batched(theta, x[s : s + chunk_size], q[s : s + chunk_size]))
    return {nm: {n: torch.cat([d[n][:, j] for d in parts]) for n in chosen} for j, nm in enumerate(NORMS)}


_HOOKED = (nn.Linear, nn.Conv2d, nn.BatchNorm2d)


def _module_norms(name: str, m: nn.Module, a: torch.Tensor, d: torch.Tensor) -> dict[str, tuple]:
    """(‖g‖₁, ‖g‖₂²) per image of each parameter of layer ``m``, from its input a and δ."""
    def both(g):
        dims = tuple(range(1, g.ndim))
        return g.abs().sum(dims), g.pow(2).sum(dims)

    if isinstance(m, nn.Linear):
        if a.ndim != 2:
            raise OODInputError(f"{name} takes a {a.ndim}-d input: its weight is shared across positions, "
                                "so its gradient is a sum of outer products, not one (use method='vmap')")
        out = {"weight": (d.abs().sum(1) * a.abs().sum(1), d.pow(2).sum(1) * a.pow(2).sum(1))}
        gb = d
    elif isinstance(m, nn.Conv2d):
        if m.groups != 1 or isinstance(m.padding, str) or m.padding_mode != "zeros":
            raise OODInputError(f"{name}: method='hooks' takes ungrouped, zero-padded convolutions (use method='vmap')")
        n = a.shape[0]  # Σ_σ δ_σ A_σᵀ per image: the weight gradient of an n-group convolution
        g = torch.nn.grad.conv2d_weight(a.reshape(1, -1, *a.shape[2:]), (n * m.out_channels, *m.weight.shape[1:]),
                                        d.reshape(1, -1, *d.shape[2:]), stride=m.stride, padding=m.padding,
                                        dilation=m.dilation, groups=n)
        out = {"weight": both(g.reshape(n, -1))}
        gb = d.sum((2, 3))
    else:
        if m.running_mean is None or m.training:
            raise OODInputError(f"{name}: BatchNorm without running statistics couples the images of a batch")
        xhat = (a - m.running_mean[:, None, None]) / torch.sqrt(m.running_var[:, None, None] + m.eps)
        out = {"weight": both((d * xhat).sum((2, 3)))}
        gb = d.sum((2, 3))
    if getattr(m, "bias", None) is not None:
        out["bias"] = both(gb)
    return out


def _hooks(model, x, loss, labels, T, chosen, chunk_size, progress) -> dict[str, dict[str, torch.Tensor]]:
    from tqdm.auto import tqdm

    owners: dict[str, nn.Module] = {}
    for mn, m in model.named_modules():
        own = [f"{mn}.{pn}" if mn else pn for pn, _ in m.named_parameters(recurse=False)]
        if any(n in chosen for n in own):
            if not isinstance(m, _HOOKED):
                raise OODInputError(f"method='hooks' takes nn.Linear, nn.Conv2d and nn.BatchNorm2d layers; "
                                    f"{mn or 'the model'} is a {type(m).__name__} (use method='vmap')")
            owners[mn] = m
    parts: dict[str, dict[str, list]] = {nm: {n: [] for n in chosen} for nm in NORMS}
    for s in tqdm(range(0, x.shape[0], chunk_size), desc="hooks", disable=not progress, leave=False):
        ys = None if labels is None else labels[s : s + chunk_size]
        for mn, (a, d) in _capture(model, x[s : s + chunk_size], loss, ys, T, owners).items():
            for pn, norms in _module_norms(mn, owners[mn], a, d).items():
                n = f"{mn}.{pn}" if mn else pn
                if n in chosen:
                    for nm, v in zip(NORMS, norms):
                        parts[nm][n].append(v)
    return {nm: {n: torch.cat(parts[nm][n]) for n in chosen} for nm in NORMS}


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
    progress: bool = False,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-image ‖∇_θ ℓ‖₁ and ‖∇_θ ℓ‖₂² for every parameter tensor θ: ``{norm: {name: (N,)}}``.

    ``norm`` is ``"l1"`` or ``"l2sq"``; ``name`` runs over ``model.named_parameters()`` (or those
    whose name equals or starts with an entry of ``params``). ``loss`` is a key of
    :data:`LAYER_LOSSES`, at temperature T: ℓ = KL(u ‖ softmax(f/T)) or −Σ q log softmax(f/T).
    Run a float64 model on float64 inputs for exact comparisons.
    """
    if method not in ("vmap", "hooks", "loop"):
        raise OODInputError(f"method must be 'vmap', 'hooks' or 'loop', got {method!r}")
    if chunk_size < 1:
        raise OODInputError(f"chunk_size must be >= 1, got {chunk_size}")
    x, labels, T = _check(model, x, loss, labels, temperature)
    chosen = _select(model, params)
    if method == "hooks":
        return _hooks(model, x, loss, labels, T, chosen, chunk_size, progress)
    with torch.no_grad():
        q = _targets(model(x), loss, labels)
    if method == "loop":
        return _loop(model, x, q, loss, T, chosen, progress)
    with torch.no_grad():
        return _vmap(model, x, q, loss, T, chosen, chunk_size, progress)


def _capture(model, x, loss, labels, T, modules: dict[str, nn.Module]):
    """One batched forward + one backward of Σ_i ℓ_i: each module's input a and δ = ∂ℓ/∂(output).

    In eval mode image i's loss depends on image i alone, so row i of ∂(Σℓ)/∂y is image i's δ.
    Each output is passed on as a copy, so that in-place operations downstream (``ReLU(inplace=True)``,
    ``out += identity``) cannot turn it into another tensor.
    """
    seen: dict[str, list] = {n: [] for n in modules}

    def keep(n, i, o):
        seen[n].append((i[0], i[0]._version, o))
        return o.clone()

    hooks = [m.register_forward_hook(lambda _m, i, o, n=n: keep(n, i, o)) for n, m in modules.items()]
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            odd = [n for n, v in seen.items() if len(v) != 1]
            if odd:
                raise OODInputError(f"{odd[0]} ran {len(seen[odd[0]])} times in one forward: its per-sample "
                                    "gradient is not the product of one input and one back-propagated signal")
            changed = [n for n, v in seen.items() if v[0][0]._version != v[0][1]]
            if changed:
                raise OODInputError(f"the input of {changed[0]} was changed in place after it ran")
            outs = [seen[n][0][2] for n in modules]
            q = _targets(logits.detach(), loss, labels)
            deltas = torch.autograd.grad(_sample_loss(logits, q, loss, T).sum(), outs, allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
    return {n: (seen[n][0][0].detach(), torch.zeros_like(o) if d is None else d.detach())
            for n, o, d in zip(modules, outs, deltas)}


def linear_closed_form(
    model: nn.Module, x: Any, *, loss: str = "uniform_kl", labels: Any = None, temperature: float = 1.0,
) -> dict[str, dict[str, torch.Tensor]]:
    """‖∇‖₁ and ‖∇‖₂² of every nn.Linear's weight and bias, per image, with no per-sample backward.

    ∇_W ℓ = δ aᵀ, so ‖∇_W‖₁ = ‖δ‖₁ ‖a‖₁ and ‖∇_W‖_F² = ‖δ‖₂² ‖a‖₂²; ∇_b ℓ = δ. Same layout as
    :func:`layer_grad_norms` (parameter names ``<module>.weight``, ``<module>.bias``).
    """
    x, labels, T = _check(model, x, loss, labels, temperature)
    lin = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not lin:
        raise OODInputError(f"{type(model).__name__} has no nn.Linear layer")
    out: dict[str, dict[str, torch.Tensor]] = {"l1": {}, "l2sq": {}}
    for n, (a, d) in _capture(model, x, loss, labels, T, lin).items():
        for pn, norms in _module_norms(n, lin[n], a, d).items():
            for nm, v in zip(NORMS, norms):
                out[nm][f"{n}.{pn}"] = v
    return out


def last_conv_name(model: nn.Module, x: torch.Tensor) -> str:
    """The name of the last nn.Conv2d called in a forward pass of ``x[:1]``."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda *_a, n=n: order.append(n))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
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
    x, labels, T = _check(model, x, loss, labels, temperature)
    name = conv or last_conv_name(model, x)
    layer = dict(model.named_modules()).get(name)
    if not isinstance(layer, nn.Conv2d):
        raise OODInputError(f"conv={name!r} is not an nn.Conv2d of the model")
    if layer.groups != 1 or isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise OODInputError(f"{name}: only ungrouped, zero-padded convolutions with numeric padding")
    a, d = _capture(model, x, loss, labels, T, {name: layer})[name]
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
