"""What every per-sample gradient of one layer is built from: the layer's input a and the signal
δ = ∂ℓ/∂(its output) back-propagated to it (chapter *Gradient scores and their closed forms*,
section on depth).

In eval mode image i's loss ℓ_i depends on image i alone, so one batched forward and one
backward of Σ_i ℓ_i give every image's δ at once (:func:`capture_signals`), and each layer's
per-sample parameter gradient is a function of (a_i, δ_i) (:func:`module_grad_norms`):

* nn.Linear, y = W a + b:       ∇_W ℓ = δ aᵀ  →  ‖∇_W‖₁ = ‖δ‖₁‖a‖₁,  ‖∇_W‖_F² = ‖δ‖₂²‖a‖₂²;
* nn.Conv2d (any groups):       ∇_W ℓ = Σ_σ δ_σ A_σᵀ (A_σ the input patch at position σ), the
  weight gradient of one convolution with a group per image;
* eval-mode nn.BatchNorm2d:     ∇_γ ℓ = Σ_σ δ_σ x̂_σ,  ∇_β ℓ = Σ_σ δ_σ.

Layers whose ``forward`` is not the plain PyTorch one (a padded or fused subclass) are refused:
their input and output are not related by the formula above.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import OODInputError, as_float_tensor, check_temperature

__all__ = ["INPUT", "LAYER_LOSSES", "NORMS", "REBUILT", "capture_signals", "channel_std", "check_layer_inputs",
           "loss_targets", "module_grad_norms", "not_rebuilt", "sample_loss"]

LAYER_LOSSES = {
    "uniform_kl": "KL(u ‖ p): GradNorm's loss",
    "ones": "Σ_k −log p_k: the all-ones target (GradNorm's released code)",
    "pred": "CE(f, argmax p): the predicted label",
    "label": "CE(f, y): a given label (pass labels=)",
}
NORMS = ("l1", "l2sq")
INPUT = "input"  # the key of the input gradient's norms beside the parameters'
REBUILT = (nn.Linear, nn.Conv2d, nn.BatchNorm2d)


def check_layer_inputs(model: nn.Module, x: Any, loss: str, labels: Any, temperature: float) -> tuple:
    """``(x, labels, T)`` on the model's device and dtype; an error naming what is wrong."""
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


def channel_std(std: float | Sequence[float] | None, channels: int, like: torch.Tensor) -> torch.Tensor:
    """The per-channel std of an input normalisation x = (pixel − mean)/std as a (1, C, 1, …) tensor.

    ``None`` means 1 (unnormalised inputs); one number applies to every channel. A gradient
    w.r.t. the normalised input x becomes one w.r.t. the pixels by ∂/∂pixel = (∂/∂x) / std.
    """
    s = torch.ones(channels) if std is None else torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    if s.numel() == 1:
        s = s.expand(channels)
    if s.numel() != channels:
        raise OODInputError(f"input_std has {s.numel()} values for {channels} input channels")
    if not bool(torch.isfinite(s).all() and (s > 0).all()):
        raise OODInputError(f"input_std must be finite and > 0, got {s.tolist()}")
    return s.to(device=like.device, dtype=like.dtype).reshape(1, channels, *([1] * (like.ndim - 2)))


def loss_targets(logits: torch.Tensor, loss: str, labels: torch.Tensor | None) -> torch.Tensor:
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


def sample_loss(logits: torch.Tensor, q: torch.Tensor, loss: str, T: float) -> torch.Tensor:
    """ℓ per image (last dim = classes): KL(u ‖ p_T) or the cross-entropy −Σ q log p_T."""
    logp = F.log_softmax(logits / T, dim=-1)
    if loss == "uniform_kl":
        return (q * (q.log() - logp)).sum(-1)
    return -(q * logp).sum(-1)


def not_rebuilt(m: nn.Module) -> str | None:
    """Why :func:`module_grad_norms` cannot rebuild ``m``'s per-sample gradients (None: it can).
    It takes a plain nn.Linear, a zero-padded nn.Conv2d with numeric padding, and nn.BatchNorm2d
    with running statistics in eval mode."""
    base = next((c for c in REBUILT if isinstance(m, c)), None)
    kind = type(m).__name__
    if base is None:
        return f"is a {kind}, not an nn.Linear, nn.Conv2d or nn.BatchNorm2d"
    if type(m).forward is not base.forward:
        return f"is a {kind} whose forward is not {base.__name__}'s (its input and output are related otherwise)"
    if base is nn.Conv2d and (isinstance(m.padding, str) or m.padding_mode != "zeros"):
        return f"pads with padding={m.padding!r}, padding_mode={m.padding_mode!r}: only numeric zero padding"
    if base is nn.BatchNorm2d and (m.running_mean is None or m.training):
        return "is a BatchNorm without running statistics in eval mode: it couples the images of a batch"
    return None


# A grouped convolution with one group per image runs one small product per image, summed over the
# output positions: when there are few positions an unfolded input and one batched product are faster.
UNFOLD_MAX_POSITIONS = 100


def _conv_weight_grads(m: nn.Conv2d, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per-image ∇_W ℓ = Σ_σ δ_σ A_σᵀ of a convolution, shape (N, C_out, C_in/groups · k_h · k_w)."""
    n, positions = a.shape[0], d.shape[2] * d.shape[3]
    if m.groups == 1 and (m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)):
        return torch.bmm(d.flatten(2), a.flatten(2).transpose(1, 2))  # Σ_σ δ_σ a_σᵀ
    if m.groups == 1 and positions <= UNFOLD_MAX_POSITIONS:
        A = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
        return torch.bmm(d.flatten(2), A.transpose(1, 2))
    g = torch.nn.grad.conv2d_weight(a.reshape(1, -1, *a.shape[2:]), (n * m.out_channels, *m.weight.shape[1:]),
                                    d.reshape(1, -1, *d.shape[2:]), stride=m.stride, padding=m.padding,
                                    dilation=m.dilation, groups=n * m.groups)
    return g.reshape(n, m.out_channels, -1)


def module_grad_norms(name: str, m: nn.Module, a: torch.Tensor, d: torch.Tensor,
                      norms: Sequence[str] = NORMS) -> dict[str, tuple]:
    """``{parameter: (one (N,) tensor per entry of norms)}`` of layer ``m``, per image, from its input
    a and δ (module doc); ``norms`` ⊆ ("l1", "l2sq")."""
    def take(g):
        g = g.flatten(1)
        return tuple(torch.linalg.vector_norm(g, 1, dim=1) if nm == "l1" else
                     torch.linalg.vector_norm(g, 2, dim=1).square() for nm in norms)

    why = not_rebuilt(m)
    if why:
        raise OODInputError(f"{name or 'the model'} {why}")
    if isinstance(m, nn.Linear):
        if a.ndim != 2:
            raise OODInputError(f"{name} takes a {a.ndim}-d input: its weight is shared across positions, "
                                "so its gradient is a sum of outer products, not one (use method='vmap')")
        out = {"weight": tuple(d.abs().sum(1) * a.abs().sum(1) if nm == "l1" else d.pow(2).sum(1) * a.pow(2).sum(1)
                               for nm in norms)}
        gb = d
    elif isinstance(m, nn.Conv2d):
        out = {"weight": take(_conv_weight_grads(m, a, d))}
        gb = d.sum((2, 3))
    else:  # Σ_σ δ_σ x̂_σ = (Σ_σ δ_σ a_σ − μ Σ_σ δ_σ) / √(σ² + eps): no normalised copy of the input
        gb = d.sum((2, 3))
        da = torch.einsum("ncs,ncs->nc", d.flatten(2), a.flatten(2))
        out = {"weight": take((da - m.running_mean * gb) / torch.sqrt(m.running_var + m.eps))}
    if getattr(m, "bias", None) is not None:
        out["bias"] = take(gb)
    return out


def _forward(model, x, modules, copy):
    """A forward pass recording each module's (input, its version, output, its version)."""
    seen: dict[str, list] = {n: [] for n in modules}

    def keep(n, i, o):
        seen[n].append((i[0], i[0]._version, o, o._version))
        return o.clone() if n in copy else None

    hooks = [m.register_forward_hook(lambda _m, i, o, n=n: keep(n, i, o)) for n, m in modules.items()]
    try:
        xg = x.detach().requires_grad_(True)
        return xg, model(xg), seen
    finally:
        for h in hooks:
            h.remove()


def capture_signals(model: nn.Module, x: torch.Tensor, loss: str, labels: torch.Tensor | None, T: float,
                    modules: dict[str, nn.Module], wrt_input: bool = False, copy: set[str] | None = None,
                    consume: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
                    ) -> tuple[dict, torch.Tensor | None]:
    """One batched forward + one backward of Σ_i ℓ_i: ``({module: (a, δ)}, ∂ℓ/∂x or None)``.

    Row i of ∂(Σℓ)/∂y is image i's δ (eval mode). Each δ is read by a hook on the module's output
    the moment the backward has summed it; with ``consume``, ``consume(name, a, δ)`` is called
    there and nothing is kept (the returned dict is empty), so no more than one δ is alive beyond
    what the backward itself holds. A module whose output is changed in place downstream
    (``ReLU(inplace=True)``, ``out += identity``) would hand autograd another tensor: such outputs
    are passed on as copies — the names in ``copy``, a set that this call extends (and then
    repeats the forward) when it finds another; pass the same set for every chunk. Only the
    signals are differentiated: no parameter's ``.grad`` is formed.
    """
    copy = set() if copy is None else copy
    kept: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.enable_grad():
        while True:
            xg, logits, seen = _forward(model, x, modules, copy)
            odd = [n for n, v in seen.items() if len(v) != 1]
            if odd:
                raise OODInputError(f"{odd[0]} ran {len(seen[odd[0]])} times in one forward: its per-sample "
                                    "gradient is not the product of one input and one back-propagated signal")
            moved = [n for n, v in seen.items() if v[0][2]._version != v[0][3]]
            if not moved:
                break
            copy.update(moved)
        changed = [n for n, v in seen.items() if v[0][0]._version != v[0][1]]
        if changed:
            raise OODInputError(f"the input of {changed[0]} was changed in place after it ran")
        def read(n: str, d: torch.Tensor) -> None:
            a = seen.pop(n)[0][0].detach()  # dropped here, so that the backward can free what it no longer needs
            if consume is None:
                kept[n] = (a, d.detach())
            else:
                consume(n, a, d.detach())

        for n, v in seen.items():
            if v[0][2].requires_grad:
                v[0][2].register_hook(lambda d, n=n: read(n, d))
        q = loss_targets(logits.detach(), loss, labels)
        (gx,) = torch.autograd.grad(sample_loss(logits, q, loss, T).sum(), [xg], allow_unused=True)
    for n in [n for n in modules if n in seen]:  # a layer the loss does not depend on: δ = 0
        read(n, torch.zeros_like(seen[n][0][2]))
    if not wrt_input:
        return kept, None
    return kept, torch.zeros_like(x) if gx is None else gx.detach()
