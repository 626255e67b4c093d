"""The U·V family: formulas, orientation, the registry."""

import math

import numpy as np
import pytest
import torch

from ood_lib.gradient_registry import GRADIENT_SCORES, RUNNER_AUTOGRAD, flipped_name
from ood_lib.scores import (
    ALIASES, GRADIENT_FORMS, SCORES, U_TERMS, V_TERMS, canonical, grid_names, score, scores, u_term, v_term,
)


def rand(n=50, c=7, d=9, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), scale * torch.randn(n, c, generator=g, dtype=torch.float64)


def test_v_terms_against_direct_formulas():
    h, f = rand()
    T = 1.7
    p = torch.softmax(f / T, 1)
    C = f.shape[1]
    expect = {
        "msp": p.max(1).values,
        "pu_l1": (p - 1 / C).abs().sum(1),
        "p_l2sq": (p**2).sum(1),
        "unif_l2sq": 1 - 2 / C + (p**2).sum(1),
        "neg_entropy": (p * p.log()).sum(1),
        "kl_u": math.log(C) + (p * p.log()).sum(1),
        "maxlogit": f.max(1).values,
        "lse": T * torch.logsumexp(f / T, 1),
        "gini": (p * (1 - p)).sum(1),
        "one_minus_msp": 1 - p.max(1).values,
        "one": torch.ones(len(f), dtype=f.dtype),
    }
    assert set(expect) == set(V_TERMS)
    for name, e in expect.items():
        torch.testing.assert_close(v_term(name, f, T), e, rtol=1e-12, atol=1e-12, msg=name)


def test_u_terms_against_direct_formulas():
    h, _ = rand()
    expect = {
        "one": torch.ones(len(h), dtype=h.dtype),
        "l1": h.abs().sum(1), "l1b": h.abs().sum(1) + 1,
        "l2": h.norm(dim=1), "l2b": (h.norm(dim=1) ** 2 + 1).sqrt(),
        "l2sq": (h**2).sum(1), "l2sqb": (h**2).sum(1) + 1,
        "linf": h.abs().max(1).values, "linfb": h.abs().max(1).values.clamp(min=1),
    }
    assert set(expect) == set(U_TERMS)
    for name, e in expect.items():
        torch.testing.assert_close(u_term(name, h), e, rtol=1e-12, atol=1e-12, msg=name)


def test_gini_is_stable_near_a_vertex():
    f = torch.tensor([[40.0, 0.0, 0.0]], dtype=torch.float64)  # 1 − max p ≈ 8.5e-18
    exact = 2 * math.exp(-40) / (1 + 2 * math.exp(-40))
    assert abs(float(v_term("one_minus_msp", f)) / exact - 1) < 1e-12
    assert abs(float(v_term("gini", f)) / (2 * exact) - 1) < 1e-9


def test_orientation_is_applied_once_from_the_v_sign():
    h, f = rand()
    o = scores(["l1*gini", "l1*p_l2sq", "exgrad", "exgrad_flipped", "msp"], h, f)
    raw_gini = u_term("l1", h) * v_term("gini", f)
    torch.testing.assert_close(o["l1*gini"], -raw_gini)
    torch.testing.assert_close(o["exgrad_flipped"], -o["exgrad"])
    torch.testing.assert_close(o["msp"], v_term("msp", f))
    assert all(SCORES[n].sign == +1 for n in GRADIENT_FORMS)


def test_grid_is_every_u_times_every_v():
    names = grid_names()
    assert len(names) == len(U_TERMS) * len(V_TERMS) - 1
    assert all(n in SCORES for n in names)
    h, f = rand()
    s = scores(names, h, f)
    torch.testing.assert_close(s["l2*msp"], h.norm(dim=1) * torch.softmax(f, 1).max(1).values)


def test_gradnorm_registry_equals_grid_member_up_to_T():
    h, f = rand()
    T = 2.0
    a = score("gradnorm", h, f, T)
    b = score("l1*pu_l1", h, f, T)
    torch.testing.assert_close(a, b / T)


def test_float32_and_numpy_inputs():
    h, f = rand()
    s32 = score("l1*msp", h.float().numpy(), f.float().numpy())
    assert s32.dtype == torch.float32
    np.testing.assert_allclose(s32.numpy(), score("l1*msp", h, f).numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float16, torch.bfloat16])
def test_integer_and_half_inputs_are_promoted(dtype):
    f = torch.tensor([[3, 1, 0], [0, 0, 9]]).to(dtype)
    s = score("energy", None, f)
    assert s.dtype == torch.float32 and torch.isfinite(s).all()


def test_huge_half_logits_do_not_overflow():
    f = torch.tensor([[60000.0, 0.0]], dtype=torch.float16)
    assert torch.isfinite(score("energy", None, f)).all()


def test_gradient_lists_are_derived_from_one_record_per_score():
    assert set(GRADIENT_FORMS) == {n for n, g in GRADIENT_SCORES.items() if g.u is not None}
    assert "mean_grad" in GRADIENT_SCORES and "mean_grad" not in GRADIENT_FORMS
    flipped = {n.removesuffix("_flipped") for n in SCORES if n.endswith("_flipped")}
    assert flipped == {n for n, g in GRADIENT_FORMS.items() if V_TERMS[g.v].sign < 0} == {"exgrad", "fisher", "ce_pred"}
    assert RUNNER_AUTOGRAD == ("gradnorm", "gradnorm_official", "exgrad", "fisher", "ce_pred")
    h, f = rand()
    for name, g in GRADIENT_FORMS.items():  # each record's c, U, V give its registered closed form
        expect = g.factor(f.shape[1], 1.0) * u_term(g.u, h) * v_term(g.v, f)
        torch.testing.assert_close(score(name, h, f), g.orientation * expect)


@pytest.mark.parametrize("T", [1.0, 0.6])
def test_every_alias_ranks_every_input_like_its_canonical_member(T):
    h, f = rand(n=200, scale=4.0)
    s = scores(list(SCORES), h, f, T)
    for name, a in ALIASES.items():
        assert a.canonical in SCORES and a.name == name
        assert torch.equal(torch.argsort(s[name]), torch.argsort(s[a.canonical])), name
    # exgrad (the published reading) is the reverse of its grid member, not an alias
    assert "exgrad" not in ALIASES and torch.equal(torch.argsort(s["exgrad"]), torch.argsort(-s["l1*gini"]))


def test_aliases_are_declared_once_and_canonical_resolves_chains():
    assert ALIASES["msp"].canonical == "one*msp" and ALIASES["energy"].canonical == "one*lse"
    assert ALIASES["gradnorm"].canonical == "l1*pu_l1" and ALIASES[flipped_name("exgrad")].canonical == "l1*gini"
    assert canonical("one*one_minus_msp") == "one*msp" and canonical("l1*msp") == "l1*msp"
    assert all(canonical(n) not in ALIASES for n in SCORES)
    distinct = {canonical(n) for n in SCORES}
    assert len(distinct) == len(SCORES) - len(ALIASES)
