"""Gradient OOD scores computed by autograd, exactly as each is defined (never via a closed form).

These are the *evidence* against which the closed forms in :mod:`ood_lib.scores` are checked
(chapter *Gradient scores and their closed forms*). Each score (a record of
:mod:`ood_lib.scores.registry`: loss target and norm) is a norm of the gradient of a
cross-entropy-type loss of the logits, w.r.t. a chosen set of tensors:

* ``wrt="head"``  — the last linear layer's weight W (and its bias b when ``bias=True``);
* ``wrt="input"`` — the input image (ODIN's perturbation direction);
* ``wrt=<prefix>`` — every parameter whose name starts with the prefix (e.g. ``"layer3"``).

Two paths compute the same numbers:

* ``method="loop"``: one image at a time with ``torch.autograd``, the way published GradNorm
  code does it (``full_backward=True`` also fills ``.grad`` of every parameter, as a plain
  ``loss.backward()`` does);
* ``method="vmap"``: batched per-sample gradients with ``torch.func``. For ``wrt="head"`` the
  backbone runs once per batch, without a graph, and only the head is differentiated — once per
  loss target (C times for the exact expectations over the labels). For the input or a deeper
  layer the gradient flows through the backbone, so it runs again for every target.

The model must expose ``features(x) -> h`` and a ``head`` linear layer with
``model(x) == head(features(x))`` (see :mod:`ood_lib.models`), and should be in eval mode.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import OODInputError, as_float_tensor, check_temperature, unknown_name
from ..models.anatomy import check_feature_model
from ..scores.registry import GRADIENT_SCORES, GradientScore

__all__ = ["GRADIENT_SCORES", "check_feature_model", "gradient_score", "head_gradient_score", "target_spread"]


def _loss(logits: torch.Tensor, q: torch.Tensor, target: str, T: float) -> torch.Tensor:
    """The loss of one sample's logits (C,) for target vector q (C,)."""
    logp = F.log_softmax(logits / T, dim=-1)
    if target == "uniform_kl":  # KL(u || p) = Σ u (log u − log p)
        return (q * (q.log() - logp)).sum()
    return -(q * logp).sum()  # cross-entropy with a soft / one-hot / all-ones target


def _norm(grads: Iterator[torch.Tensor] | tuple[torch.Tensor, ...], norm: str, batched: bool) -> torch.Tensor:
    dims = (lambda g: tuple(range(1, g.ndim))) if batched else (lambda g: tuple(range(g.ndim)))
    if norm == "l1":
        return sum(g.abs().sum(dim=dims(g)) for g in grads)
    return sum(g.pow(2).sum(dim=dims(g)) for g in grads)


def _targets(spec: GradientScore, p: torch.Tensor) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """(weight, target) pairs for a batch: score = Σ weight · ‖∇ loss(target)‖ (weight None = 1).

    p: (N, C) detached probabilities at temperature T.
    """
    N, C = p.shape
    eye = torch.eye(C, dtype=p.dtype, device=p.device)
    if spec.target == "uniform_kl":
        return [(None, torch.full_like(p, 1.0 / C))]
    if spec.target == "ones":
        return [(None, torch.ones_like(p))]
    if spec.target == "pred":
        return [(None, eye[p.argmax(dim=1)])]
    if spec.target == "expect_p":
        return [(p[:, y], eye[y].expand(N, C)) for y in range(C)]
    if spec.target == "expect_u":
        return [(torch.full_like(p[:, 0], 1.0 / C), eye[y].expand(N, C)) for y in range(C)]
    raise AssertionError(spec.target)  # pragma: no cover


def _param_set(model: nn.Module, wrt: str, bias: bool) -> dict[str, nn.Parameter]:
    head = check_feature_model(model)
    named = dict(model.named_parameters())
    if wrt == "head":
        ids = {id(head.weight)} | ({id(head.bias)} if bias and head.bias is not None else set())
        chosen = {n: q for n, q in named.items() if id(q) in ids}
    else:
        chosen = {n: q for n, q in named.items() if n == wrt or n.startswith(wrt + ".")}
        if not chosen:
            prefixes = sorted({n.split(".")[0] for n in named})
            raise OODInputError(
                f"wrt={wrt!r} matches no parameter; use 'head', 'input' or a prefix of: {', '.join(prefixes)}"
            )
    return chosen


def _loop(model, x, spec, wrt, T, bias, full_backward) -> torch.Tensor:
    params = {} if wrt == "input" else _param_set(model, wrt, bias)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(x.shape[0]):
        xi = x[i : i + 1].detach().clone().requires_grad_(wrt == "input")
        logits = model(xi)[0]
        p = F.softmax(logits.detach() / T, dim=-1)[None]
        pairs = _targets(spec, p)
        wanted = [xi] if wrt == "input" else list(params.values())
        acc = torch.zeros((), dtype=x.dtype, device=x.device)
        for j, (w, q) in enumerate(pairs):
            loss = _loss(logits, q[0], spec.target, T)
            last = j == len(pairs) - 1
            if full_backward and wrt != "input":
                model.zero_grad(set_to_none=True)
                loss.backward(retain_graph=not last)
                grads = tuple(t.grad for t in wanted)
            else:
                grads = torch.autograd.grad(loss, wanted, retain_graph=not last)
            acc = acc + (1.0 if w is None else w[0]) * _norm(grads, spec.norm, batched=False)
        out[i] = acc
    return out


def _loop_mean_grad(model, x, wrt, T, bias) -> torch.Tensor:
    params = {} if wrt == "input" else _param_set(model, wrt, bias)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(x.shape[0]):
        xi = x[i : i + 1].detach().clone().requires_grad_(wrt == "input")
        logits = model(xi)[0]
        p = F.softmax(logits.detach() / T, dim=-1)
        wanted = [xi] if wrt == "input" else list(params.values())
        C = p.shape[0]
        total = [torch.zeros_like(t) for t in wanted]
        for y in range(C):
            q = torch.zeros_like(p)
            q[y] = 1.0
            grads = torch.autograd.grad(_loss(logits, q, "ce", T), wanted, retain_graph=y < C - 1)
            total = [a + p[y] * g for a, g in zip(total, grads)]
        out[i] = _norm(total, "l1", batched=False)
    return out


def _vmap_inputs(model, x, wrt, T) -> tuple[torch.Tensor, torch.Tensor]:
    """What the per-sample gradients are taken from, and p (detached), from one forward pass.

    For ``wrt="head"`` that is h: the backbone runs here once, and every loss target reuses it.
    Otherwise it is x itself, which each target runs through the backbone again.
    """
    with torch.no_grad():
        if wrt == "head":
            h = model.features(x)
            return h, F.softmax(model.head(h) / T, dim=-1)
        return x, F.softmax(model(x) / T, dim=-1)


def _vmap_grads(model, inp, wrt, bias, T, target, q_batch) -> tuple[torch.Tensor, ...]:
    """Per-sample gradients of the loss with per-sample targets q_batch (N, C).

    ``inp`` is what :func:`_vmap_inputs` returned: the features h for ``wrt="head"`` (only the
    head is differentiated; no backbone pass here), else the images (a backbone pass per call).
    """
    from torch.func import functional_call, grad, vmap

    head = model.head
    if wrt == "head":
        theta = {"weight": head.weight.detach()}
        fixed_b = head.bias.detach() if head.bias is not None else None
        if bias and head.bias is not None:
            theta["bias"] = fixed_b

        def loss_fn(th, hi, qi):
            logits = F.linear(hi, th["weight"], th.get("bias", fixed_b))
            return _loss(logits, qi, target, T)

        g = vmap(grad(loss_fn), in_dims=(None, 0, 0))(theta, inp, q_batch)
        return tuple(g.values())
    if wrt == "input":

        def loss_x(xi, qi):
            return _loss(model(xi[None])[0], qi, target, T)

        return (vmap(grad(loss_x), in_dims=(0, 0))(inp, q_batch),)

    chosen = _param_set(model, wrt, bias)
    theta = {n: q.detach() for n, q in chosen.items()}
    rest = {n: q.detach() for n, q in model.named_parameters() if n not in chosen}
    buffers = dict(model.named_buffers())

    def loss_p(th, xi, qi):
        logits = functional_call(model, ({**rest, **th}, buffers), (xi[None],))[0]
        return _loss(logits, qi, target, T)

    g = vmap(grad(loss_p), in_dims=(None, 0, 0))(theta, inp, q_batch)
    return tuple(g.values())


PAIR_BUDGET = 2**20  # gradient entries one batched call over (image, label) pairs may hold (8 MB in float64: fastest measured)


def _head_label_grads(model, h, bias, T) -> Iterator[tuple[slice, tuple[torch.Tensor, ...]]]:
    """The head's per-sample gradients of CE(f, y) for every label y, by autograd, in chunks of
    labels: ``(labels, grads)`` with each gradient of shape (N, K, ...) for the K labels of the
    chunk. The (image, label) pairs of a chunk are one ``vmap`` call, so a head of C classes takes
    about N·C·C·D / :data:`PAIR_BUDGET` calls instead of C."""
    N, D = h.shape
    C = model.head.out_features
    eye = torch.eye(C, dtype=h.dtype, device=h.device)
    k = max(1, min(C, PAIR_BUDGET // max(1, N * C * (D + 1))))
    for s in range(0, C, k):
        ys = slice(s, min(C, s + k))
        K = ys.stop - ys.start
        g = _vmap_grads(model, h.repeat_interleave(K, 0), "head", bias, T, "ce", eye[ys].repeat(N, 1))
        yield ys, tuple(t.reshape(N, K, *t.shape[1:]) for t in g)


def _vmap(model, x, spec, wrt, T, bias) -> torch.Tensor:
    inp, p = _vmap_inputs(model, x, wrt, T)
    if wrt == "head" and spec.target in ("expect_p", "expect_u", "mean_grad_p"):
        acc = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        total = None
        for ys, g in _head_label_grads(model, inp, bias, T):
            w = p[:, ys] if spec.target != "expect_u" else torch.full_like(p[:, ys], 1.0 / p.shape[1])
            if spec.target == "mean_grad_p":
                part = tuple((t * w.view(*w.shape, *([1] * (t.ndim - 2)))).sum(1) for t in g)
                total = part if total is None else tuple(a + b for a, b in zip(total, part))
            else:
                n = sum(t.abs().flatten(2).sum(2) if spec.norm == "l1" else t.pow(2).flatten(2).sum(2) for t in g)
                acc = acc + (w * n).sum(1)
        return _norm(total, "l1", batched=True) if spec.target == "mean_grad_p" else acc
    if spec.target == "mean_grad_p":
        eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
        total = None
        for y in range(p.shape[1]):
            g = _vmap_grads(model, inp, wrt, bias, T, "ce", eye[y].expand_as(p))
            w = p[:, y]
            g = tuple(t * w.view(-1, *([1] * (t.ndim - 1))) for t in g)
            total = g if total is None else tuple(a + b for a, b in zip(total, g))
        return _norm(total, "l1", batched=True)
    acc = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for w, q in _targets(spec, p):
        g = _vmap_grads(model, inp, wrt, bias, T, spec.target, q)
        n = _norm(g, spec.norm, batched=True)
        acc = acc + (n if w is None else w * n)
    return acc


def gradient_score(
    name: str,
    model: nn.Module,
    x: Any,
    *,
    temperature: float = 1.0,
    bias: bool = False,
    wrt: str = "head",
    method: str = "vmap",
    batch_size: int = 256,
    full_backward: bool = False,
) -> torch.Tensor:
    """Gradient score ``name`` (see :data:`GRADIENT_SCORES`) for each image in ``x``, by autograd.

    Returns the raw value (a gradient norm, not oriented) as an (N,) tensor in ``x``'s dtype
    (run a float64 model on float64 inputs for exact comparisons).
    """
    if name not in GRADIENT_SCORES:
        raise unknown_name("gradient score", name, GRADIENT_SCORES)
    if method not in ("loop", "vmap"):
        raise OODInputError(f"method must be 'loop' or 'vmap', got {method!r}")
    T = check_temperature(temperature)
    check_feature_model(model)
    x = as_float_tensor(x, "x")
    if model.training:
        raise OODInputError("put the model in eval mode (model.eval()) before scoring")
    dev = next(model.parameters()).device
    x = x.to(device=dev, dtype=next(model.parameters()).dtype)
    spec = GRADIENT_SCORES[name]
    if method == "loop":
        if spec.target == "mean_grad_p":
            return _loop_mean_grad(model, x, wrt, T, bias).detach()
        return _loop(model, x, spec, wrt, T, bias, full_backward).detach()
    parts = [_vmap(model, x[i : i + batch_size], spec, wrt, T, bias) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts).detach()


def target_spread(
    model: nn.Module, x: Any, *, wrt: str = "head", temperature: float = 1.0, bias: bool = False,
    norm: str = "l1",
) -> torch.Tensor:
    """How far the gradient norm is from factorising, per image.

    For every one-hot target e_y, the ratio r_y = ‖∇ CE(f, y)‖ / ‖p − e_y‖ (the norm of the
    loss's gradient w.r.t. the logits, up to 1/T). For the last layer r_y = ‖h‖/T for every y, a
    function of the features alone — that is the factorisation. Returns (max_y r_y / min_y r_y − 1)
    per image: 0 up to rounding where the score factorises, large where it does not.
    """
    if norm not in ("l1", "l2sq"):
        raise OODInputError(f"norm must be 'l1' or 'l2sq', got {norm!r}")
    T = check_temperature(temperature)
    check_feature_model(model)
    w = next(model.parameters())
    x = as_float_tensor(x, "x").to(device=w.device, dtype=w.dtype)
    inp, p = _vmap_inputs(model, x, wrt, T)
    eye = torch.eye(p.shape[1], dtype=p.dtype, device=p.device)
    d = p[:, None, :] - eye[None]  # (N, C labels, C)
    dn = d.abs().sum(2) if norm == "l1" else d.pow(2).sum(2)
    if wrt == "head":  # every label's gradient from batched (image, label) pairs
        gn = torch.cat([sum(t.abs().flatten(2).sum(2) if norm == "l1" else t.pow(2).flatten(2).sum(2) for t in g)
                        for _, g in _head_label_grads(model, inp, bias, T)], dim=1)
    else:
        gn = torch.stack([_norm(_vmap_grads(model, inp, wrt, bias, T, "ce", eye[y].expand_as(p)), norm, batched=True)
                          for y in range(p.shape[1])], dim=1)
    r = (gn / dn).detach()
    return r.amax(dim=1) / r.amin(dim=1) - 1.0


class _HeadOnly(nn.Module):
    """A model whose 'images' are features: lets the autograd scores run on cached h."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)


def head_gradient_score(name: str, head: nn.Linear, features: Any, **kwargs: Any) -> torch.Tensor:
    """:func:`gradient_score` w.r.t. the head, by autograd, from features ``h`` already computed.

    The last-layer gradient depends on the input only through h, so this is the same number as
    backpropagating from the image; it lets the runner reuse cached features.
    """
    return gradient_score(name, _HeadOnly(head).eval(), features, wrt="head", **kwargs)
