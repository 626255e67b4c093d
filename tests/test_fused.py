"""The fused scorer: every member bit for bit as the per-member formula, at a cost that does not
grow with the number of members."""

from types import SimpleNamespace

import pytest
import torch

from ood_lib import OODInputError
from ood_lib.scores import fused
from ood_lib.run.cost import FEW_MEMBERS, operator_calls
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


def _prepared(tmp_path):
    """A Prepared with random cached features of three sets (no model, no images)."""
    import numpy as np

    from ood_lib.run.config import RunConfig
    from ood_lib.run.evaluate import Prepared

    g = np.random.default_rng(0)
    feats = {k: SimpleNamespace(h=np.abs(g.normal(size=(30, 6))).astype(np.float32),
                                logits=(3 * g.normal(size=(30, 4))).astype(np.float32), key=f"features-{k}")
             for k in ("id_test", "near", "far")}
    return Prepared("embedded", None, dict.fromkeys(feats), feats, torch.device("cpu"), None, 8,
                    RunConfig(cache_dir=tmp_path))


def test_the_runner_scores_closed_forms_together_and_caches_each(tmp_path):
    import numpy as np

    from ood_lib.run import evaluate as ev
    from ood_lib.detectors import create

    prep = _prepared(tmp_path)
    dets = [create(n) for n in FEW_MEMBERS] + [create("energy", temperature=2.0)]
    dets[-1].name = "energy_T2"  # a second temperature: a second fused call
    got = ev._fused_scores(prep, dets, tmp_path, "cpu")
    for d in dets:  # bit for bit what the detector gives alone
        s, seconds, hit = got[d.name]
        want = ev.detector_scores(prep, d)
        assert not hit and set(s) == set(want) and all(np.array_equal(s[k], want[k]) for k in want), d.name
    shares = {got[d.name][1] for d in dets[:-1]}
    assert len(shares) == 1 and shares != {got["energy_T2"][1]}  # one call's time, split evenly
    path, _ = ev._cache_entry(prep, dets[3], tmp_path, "cpu")
    path.unlink()  # one member's entry gone: it alone is scored again, the others are cache hits
    again = ev._fused_scores(prep, dets, tmp_path, "cpu")
    assert [again[d.name][2] for d in dets] == [d is not dets[3] for d in dets]
    assert all(np.array_equal(again[d.name][0][k], got[d.name][0][k]) for d in dets for k in got[d.name][0])
