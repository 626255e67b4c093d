"""The study runner: verdicts follow the pre-registered rule, tables survive a save / load round
trip, and a changed or missing recorded table is caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ood_lib._checks import OODInputError
from ood_lib.claims import CLAIMS, IDENTITY_TOL
from ood_lib.paired import verdict
from ood_lib.study import TABLES, Study, differences, run_study, seed_summary
from ood_lib import report

SMALL = dict(n_id=300, n_ood=150, n_fit=500, progress=False,
             methods=("msp", "energy", "gradnorm_autograd", "exgrad_autograd", "exgrad", "knn"))


@pytest.fixture(scope="module")
def study(embedded_model_cache):
    return run_study("embedded", cache_dir=embedded_model_cache, n_boot=200, **SMALL)


def test_every_claim_gets_a_verdict_from_its_interval(study):
    v = study["verdicts"]
    assert set(v.claim) == {c.key for c in CLAIMS}
    assert set(v.group) == {"all", "near", "far", "covariate"}
    for _, r in v[v.group != "all"].iterrows():
        if r.claim == "some_member_beats_gradnorm":
            continue
        assert r.lo <= r.estimate <= r.hi
        assert r.verdict == verdict(r.lo, r.hi, r.direction), r.claim
    ident = v[v.group == "all"].set_index("claim")
    assert (ident.estimate <= IDENTITY_TOL).all() and (ident.verdict == "supported").all()


def test_family_verdict_follows_the_simultaneous_intervals(study):
    fam, v = study["family"], study["verdicts"].set_index(["claim", "group"])
    for g, f in fam.groupby("group"):
        word = v.loc[("some_member_beats_gradnorm", g), "verdict"]
        assert word == ("supported" if (f.lo > 0).any() else "refuted" if (f.hi < 0).all() else "inconclusive")
        assert not f.member.str.startswith("one*").any() and "l1*pu_l1" not in set(f.member)


def test_selection_never_reports_a_member_on_the_set_it_was_chosen_on(study):
    sel = study["selection"]
    assert len(sel) == 4 and "sklearn_digits" not in set(sel.held_out)  # covariate sets are not OOD
    fam = study["metrics"]
    for _, r in sel.iterrows():
        rest = fam[(fam.ood.isin(set(sel.held_out) - {r.held_out})) & fam.method.isin(set(study["family"].member))]
        assert r.chosen == rest.groupby("method").auroc.mean().idxmax()


def test_round_trip_and_a_changed_number_is_caught(study, tmp_path):
    a = Study.load(study.save(tmp_path / "a"))
    assert a.source == "recorded" and differences(a, Study.load(study.save(tmp_path / "b"))) == []
    m = pd.read_csv(tmp_path / "b" / "verdicts.csv")
    m.loc[2, "estimate"] += 1e-3
    m.to_csv(tmp_path / "b" / "verdicts.csv", index=False)
    diff = differences(a, Study.load(tmp_path / "b"))
    assert len(diff) == 1 and diff[0].startswith("verdicts.estimate")
    assert differences(a, Study.load(tmp_path / "b"), tol=1e-2) == []


def test_a_recorded_study_missing_a_table_is_an_error(study, tmp_path):
    d = study.save(tmp_path / "s")
    (d / "family.csv").unlink()
    with pytest.raises(OODInputError, match="family.csv"):
        Study.load(d)
    with pytest.raises(OODInputError, match="no recorded study"):
        Study.load(tmp_path / "nothing")


def test_fewer_resamples_than_the_rule_are_flagged(study):
    assert study.meta["n_boot"] == 200 and study.meta["below_preregistered_n_boot"]
    assert set(TABLES) <= set(study.tables)


def test_report_tables(study):
    studies = {"embedded": study}
    vm = report.verdict_matrix(studies)
    assert vm.shape == (len(CLAIMS), 4) and set(np.unique(vm.values)) <= {"supported", "refuted", "inconclusive", "not run", ""}
    assert "embedded" in report.answer(study, "far")
    assert report.headline_table(studies, ["msp", "gradnorm"], "far").shape == (2, 1)


def test_seed_summary():
    t = pd.DataFrame({"seed": [0, 1, 0, 1], "group": ["far"] * 4, "quantity": ["a", "a", "b", "b"],
                      "value": [1.0, 3.0, 2.0, 2.0]})
    s = seed_summary(t).set_index("quantity")
    assert s.loc["a", "mean"] == 2.0 and s.loc["a", "sd"] == pytest.approx(np.sqrt(2)) and s.loc["b", "sd"] == 0
