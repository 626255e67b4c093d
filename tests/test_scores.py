"""The U·V family: formulas, orientation, the honest grid, the registry."""

import math

import numpy as np
import pytest
import torch

from ood_lib import OODInputError
from ood_lib.scores.registry import GRADIENT_SCORES, RUNNER_AUTOGRAD, flipped_name
from ood_lib.scores import (
    ALIASES, GRADIENT_FORMS, GRADNORM_FORM, GRID_U, GRID_V, PREREGISTERED, SCORES, U_TERMS, V_TERMS, canonical,
    grid_names, score, scores, u_term, uv_members, v_term,
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
        "maxlogit_gap": f.max(1).values - f.mean(1),
        "lse_gap": T * torch.logsumexp(f / T, 1) - f.mean(1),
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


def test_logit_gap_terms_are_kl_forms_of_p():
    _, f = rand()
    T, C = 0.7, f.shape[1]
    logp = torch.log_softmax(f / T, 1)
    kl_up = -math.log(C) - logp.mean(1)  # KL(u ‖ p)
    torch.testing.assert_close(v_term("lse_gap", f, T), T * (math.log(C) + kl_up), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(v_term("maxlogit_gap", f, T), T * (math.log(C) + logp.max(1).values + kl_up),
                               rtol=1e-12, atol=1e-12)


def test_grid_is_the_honest_five_by_eight():
    assert GRID_U == ("one", "l1", "l2", "l2sq", "linf")
    assert GRID_V == ("one", "msp", "pu_l1", "p_l2sq", "unif_l2sq", "kl_u", "maxlogit_gap", "lse_gap")
    names = grid_names()
    assert len(names) == 5 * 8 - 1 == len(set(names)) and "one*one" not in names
    assert all(SCORES[n].family == "uv" and SCORES[n].sign == +1 for n in names)
    assert {n for n, s in SCORES.items() if s.family == "uv"} == set(names)
    for terms, grid in ((U_TERMS, GRID_U), (V_TERMS, GRID_V)):  # every left-out term says why
        assert all(t.reason for n, t in terms.items() if n not in grid) and not any(terms[n].reason for n in grid)
    assert set(U_TERMS) - set(GRID_U) == {"l1b", "l2b", "l2sqb", "linfb"}
    assert set(V_TERMS) - set(GRID_V) == {"gini", "one_minus_msp", "neg_entropy", "maxlogit", "lse"}
    h, f = rand()
    s = scores(names, h, f)
    torch.testing.assert_close(s["l2*msp"], h.norm(dim=1) * torch.softmax(f, 1).max(1).values)
    with pytest.raises(OODInputError, match="'gini' is not a grid term: larger near uniform"):
        grid_names(["l1"], ["gini"])
    with pytest.raises(OODInputError, match="'l1b' is not a grid term: the bias row"):
        grid_names(["l1b"])


def _edge_logits():
    _, f = rand(n=60, c=6, scale=4.0)
    f[0] = 0.0  # the uniform prediction
    f[1] = 123.4  # uniform, far from 0
    f[2] = torch.tensor([80.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # a vertex: 1 − max p underflows
    f[3] = torch.tensor([-50.0, 3.0, 3.0, -7.0, 0.0, 0.0])
    return f


@pytest.mark.parametrize("T", [1.0, 0.5, 3.0])
def test_grid_terms_are_non_negative_and_shift_invariant(T):
    h, _ = rand(n=60)
    f = _edge_logits()
    for u in GRID_U:
        assert (u_term(u, h) >= 0).all(), u
    for v in GRID_V:
        assert (v_term(v, f, T) >= 0).all(), v
    names = grid_names()
    base = scores(names, h, f, T)
    per_input = torch.linspace(-20, 20, len(f), dtype=f.dtype)[:, None]  # a different constant per input
    for shift in (-7.25, 3.0, 100.0, per_input):
        moved = scores(names, h, f + shift, T)
        for n in names:
            assert (base[n] >= 0).all(), n
            torch.testing.assert_close(moved[n], base[n], rtol=1e-12, atol=1e-12, msg=n)


def test_left_out_logit_terms_do_change_under_a_shift():
    _, f = rand()
    shift = torch.linspace(-5, 5, len(f), dtype=f.dtype)[:, None]  # a different constant per input
    for v in ("maxlogit", "lse"):
        assert not torch.equal(torch.argsort(v_term(v, f)), torch.argsort(v_term(v, f + shift))), v
        assert torch.equal(torch.argsort(v_term(v + "_gap", f)), torch.argsort(v_term(v + "_gap", f + shift))), v


def test_every_score_is_oriented_once_and_only_flipped_readings_are_negated():
    h, f = rand()
    T = 1.3
    o = scores(["l1*p_l2sq", "exgrad", "exgrad_flipped", "fisher", "fisher_flipped", "ce_pred", "ce_pred_flipped",
                "msp", "energy", "maxlogit"], h, f, T)
    torch.testing.assert_close(o["l1*p_l2sq"], u_term("l1", h) * v_term("p_l2sq", f, T))
    torch.testing.assert_close(o["exgrad"], 2 / T * u_term("l1", h) * v_term("gini", f, T))
    for g in ("exgrad", "fisher", "ce_pred"):  # mixed orientation: both readings, exact negatives
        torch.testing.assert_close(o[flipped_name(g)], -o[g])
        assert SCORES[g].family == SCORES[flipped_name(g)].family == "gradient"
    torch.testing.assert_close(o["msp"], v_term("msp", f, T))
    torch.testing.assert_close(o["energy"], v_term("lse", f, T))
    torch.testing.assert_close(o["maxlogit"], v_term("maxlogit", f, T))
    assert all(s.sign == +1 for n, s in SCORES.items() if not n.endswith("_flipped"))
    assert all(SCORES[n].family == "baseline" for n in ("msp", "maxlogit", "energy"))


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
    mixed = {n for n, g in GRADIENT_FORMS.items() if V_TERMS[g.v].larger_near_uniform}
    assert flipped == mixed == {"exgrad", "fisher", "ce_pred"}
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
    # the mixed-orientation scores, in both readings, repeat no registered score
    for g in ("exgrad", "fisher", "ce_pred"):
        for n in (g, flipped_name(g)):
            assert n not in ALIASES and canonical(n) == n
            assert all(not torch.equal(torch.argsort(s[n]), torch.argsort(s[m])) for m in SCORES if m != n), n
    # MaxLogit and Energy are not their grid forms
    assert "maxlogit" not in ALIASES and "energy" not in ALIASES
    assert not torch.equal(torch.argsort(s["maxlogit"]), torch.argsort(s["one*maxlogit_gap"]))
    assert not torch.equal(torch.argsort(s["energy"]), torch.argsort(s["one*lse_gap"]))


def test_aliases_are_declared_once_and_canonical_resolves_chains():
    assert ALIASES["msp"].canonical == "one*msp"
    assert ALIASES["gradnorm"].canonical == ALIASES["gradnorm_official"].canonical == "l1*pu_l1" == GRADNORM_FORM
    assert canonical("unif_l1") == "l1*one" and canonical("unif_l2sq") == "l2sq*unif_l2sq"
    assert canonical("one*unif_l2sq") == "one*p_l2sq" and canonical("l2sq*one") == "l2*one"
    assert canonical("l1*msp") == "l1*msp" == PREREGISTERED
    assert all(canonical(n) not in ALIASES for n in SCORES)
    distinct = {canonical(n) for n in SCORES}
    assert len(distinct) == len(SCORES) - len(ALIASES)


def test_uv_members_leave_out_the_output_row_gradnorm_and_aliases():
    members = uv_members()
    assert PREREGISTERED in members and GRADNORM_FORM not in members
    assert not any(n.startswith("one*") for n in members) and "l2sq*one" not in members
    assert len(members) == 4 * 8 - 1 - 1 == len(set(members))  # 4 rows, less GradNorm's form and l2sq*one
    assert uv_members(exclude=("gradnorm_official",)) == members  # an alias excludes its canonical member
    every = uv_members(exclude_output_only=False, exclude=())
    assert GRADNORM_FORM in every and "one*msp" in every and "one*unif_l2sq" not in every
    assert len(every) == len(grid_names()) - 2
    with pytest.raises(OODInputError, match="unknown score"):
        uv_members(exclude=("bogus",))


def test_grid_heatmap_draws_the_honest_grid_and_outlines_two_cells():
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.patches import Rectangle
    from matplotlib.text import Text

    from ood_lib.findings.labels import term_label
    from ood_lib.book.plots import grid_heatmap, simplex_figure

    names = grid_names()
    df = pd.DataFrame({"method": names + ["msp", "gradnorm"], "ood": "mean",
                       "auroc": np.linspace(50.04, 99.0, len(names) + 2)})
    fig = grid_heatmap(pd.concat([df, df.assign(ood="far")]))
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == len(names) and all(t.count(".") == 1 and len(t.split(".")[1]) == 1 for t in texts)
    assert [t.get_text() for t in ax.get_yticklabels()] == [term_label(U_TERMS[u].label) for u in GRID_U]
    assert [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()] == [term_label(V_TERMS[v].label)
                                                                              for v in GRID_V]
    corners = {(r.get_x(), r.get_y()) for r in ax.patches if isinstance(r, Rectangle) and not r.get_fill()}
    cell = {m: (GRID_V.index(m.split("*")[1]) + 0.04, GRID_U.index(m.split("*")[0]) + 0.04)
            for m in (GRADNORM_FORM, PREREGISTERED)}
    assert set(cell.values()) == corners
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert legend == {"GradNorm's form: ‖h‖₁ · ‖p − u‖₁", "pre-registered member: ‖h‖₁ · max p"}
    ids = {*names, *GRID_U, *GRID_V} - {"one"}  # "1" is how the constant term reads
    every_text = [t.get_text() for t in fig.findobj(Text)]
    assert not [t for t in every_text if "*" in t or "_" in t or set(t.replace("\n", " ").split()) & ids]
    plt.close(fig)
    with pytest.raises(OODInputError, match="no U·V grid member"):
        grid_heatmap(df[df.method == "msp"])
    with pytest.raises(OODInputError, match="one benchmark's table"):
        grid_heatmap(pd.concat([df, df]))
    fig = simplex_figure(["p_l2sq", "gini"], resolution=8, ncols=2)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0].startswith("‖p‖₂² = 1 − Σ p(1 − p)") and titles[0].endswith("(larger at a vertex)")
    assert titles[1].startswith("Σ p(1 − p) = 1 − ‖p‖₂²") and titles[1].endswith("(larger near uniform)")
    plt.close(fig)
