"""The fused scorer: every member bit for bit as the per-member formula, at a cost that does not
grow with the number of members."""

import pytest
import torch

from ood_lib import OODInputError, fused
from ood_lib.cost import FEW_MEMBERS, operator_calls
from ood_lib.scores import SCORES, per_member_scores, score, score_matrix, scores, u_term, v_term

ALL = list(SCORES)


def rand(n=64, c=7, d=9, seed=0, scale=4.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=dtype).abs()
    f = scale * torch.randn(n, c, generator=g, dtype=dtype)
    f[0], f[1] = 0.0, torch.tensor([80.0] + [0.0] * (c - 1))  # the uniform prediction; a vertex
    return h, f


def _by_formula(name, h, f, T):
    """sign · (c · U) · V from the registry's record and the terms' own definitions."""
    s = SCORES[name]
    c = 1.0 if s.factor is None else s.factor(f.shape[1], T)
    raw = c * u_term(s.u, h) * v_term(s.v, f, T)
    return raw if s.sign > 0 else -raw


@pytest.mark.parametrize("T", [1.0, 0.6, 2.5])
def test_every_member_equals_its_formula_bit_for_bit_in_float64(T):
    h, f = rand()
    m, names = score_matrix(ALL, h, f, T)
    assert names == ALL and m.shape == (len(ALL), len(f)) and m.dtype == torch.float64
    ref = per_member_scores(ALL, h, f, T)
    for i, n in enumerate(ALL):
        assert torch.equal(m[i], ref[n]), n
        assert torch.equal(m[i], _by_formula(n, h, f, T)), n
        assert torch.equal(score(n, h, f, T), ref[n]), n  # the one-member API


def test_any_subset_and_order_gives_the_same_rows():
    h, f = rand(seed=3)
    every = scores(ALL, h, f)
    few = scores(list(reversed(FEW_MEMBERS)), h, f)
    assert list(few) == list(reversed(FEW_MEMBERS))
    assert all(torch.equal(few[n], every[n]) for n in FEW_MEMBERS)
    out_only = score_matrix(["msp", "energy", "one*kl_u"], None, f)[0]  # no features needed
    assert torch.equal(out_only, torch.stack([every[n] for n in ("msp", "energy", "one*kl_u")]))


def test_float32_matches_float64():
    h, f = rand()
    m32, _ = score_matrix(ALL, h.float(), f.float())
    m64, _ = score_matrix(ALL, h, f)
    assert m32.dtype == torch.float32
    torch.testing.assert_close(m32.double(), m64, rtol=2e-5, atol=1e-5)


def test_operator_calls_do_not_grow_with_the_number_of_members():
    h, f = rand(n=32)
    few = operator_calls(lambda: score_matrix(FEW_MEMBERS, h, f))
    every = operator_calls(lambda: score_matrix(ALL, h, f))
    assert abs(every["operator_calls"] - few["operator_calls"]) <= 2, (few, every)
    assert every["host_syncs"] == few["host_syncs"] <= 3, (few, every)  # input checks + one finiteness check
    # the per-member path grows with the members: the comparison above can tell the two apart
    old_few = operator_calls(lambda: per_member_scores(FEW_MEMBERS, h, f))
    old_every = operator_calls(lambda: per_member_scores(ALL, h, f))
    assert old_every["operator_calls"] - old_few["operator_calls"] > len(ALL) - len(FEW_MEMBERS)
    assert old_every["host_syncs"] - old_few["host_syncs"] >= len(ALL) - len(FEW_MEMBERS)


def test_one_check_names_every_non_finite_member():
    h, f = rand(dtype=torch.float32)
    h[5] = 1e30  # ‖h‖₂² overflows float32, ‖h‖₁ does not
    with pytest.raises(OODInputError, match="scores 'l2sq\\*msp', .*'fisher'") as err:
        score_matrix(["l1*msp", "l2sq*msp", "fisher"], h, f)
    assert "l1*msp" not in str(err.value)
    with pytest.raises(OODInputError, match="^score 'l2sq\\*msp' produced non-finite"):
        score("l2sq*msp", h, f)


def test_a_failed_compile_warns_and_scores_eagerly(monkeypatch):
    def broken(*args):
        raise RuntimeError("no compiler here")

    monkeypatch.setitem(fused._COMPILED, "matrix", broken)
    h, f = rand()
    with pytest.warns(RuntimeWarning, match="torch.compile of the fused scorer failed .*no compiler here"):
        m, _ = score_matrix(ALL, h, f, compile=True)
    assert torch.equal(m, score_matrix(ALL, h, f)[0])


def test_unknown_names_are_rejected_before_any_work():
    h, f = rand()
    with pytest.raises(OODInputError, match="unknown score 'nope'"):
        score_matrix(["msp", "nope"], h, f)
