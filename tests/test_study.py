"""The study runner: verdicts follow the pre-registered rule, tables survive a save / load round
trip, and a changed or missing recorded table is caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ood_lib._checks import OODInputError
from ood_lib.findings.claims import CLAIMS, CONJUNCTION, IDENTITY_TOL, MARGINS, get_claim
from ood_lib.findings.decide import conjunction, four_way, min_resamples
from ood_lib.stats.paired import verdict
from ood_lib.findings.roc import FPR_GRID, KEYS
from test_roc import roc_auroc
from ood_lib.findings.study import ROC_METHODS, TABLES, Study, differences, run_study, seed_summary
from ood_lib.book import report
from ood_lib.book import verdicts as bv
from ood_lib.findings.labels import short_pair

SMALL = dict(n_id=300, n_ood=150, n_fit=500, progress=False,
             methods=("msp", "energy", "gradnorm_autograd", "exgrad_autograd", "exgrad", "knn"))


@pytest.fixture(scope="module")
def study(embedded_model_cache):
    return run_study("embedded", cache_dir=embedded_model_cache, n_boot=200, **SMALL)


def test_every_claim_gets_a_verdict_from_its_interval_under_the_november_rule(study):
    v = study["verdicts_nov"]
    assert set(v.claim) == {c.key for c in CLAIMS}
    assert set(v.group) == {"all", "near", "far", "covariate"}
    for _, r in v[v.group != "all"].iterrows():
        if r.claim == "some_member_beats_gradnorm":
            continue
        assert r.lo <= r.estimate <= r.hi
        assert r.verdict == verdict(r.lo, r.hi, r.direction), r.claim
    ident = v[v.group == "all"].set_index("claim")
    assert (ident.estimate <= IDENTITY_TOL).all() and (ident.verdict == "supported").all()


def test_the_december_verdicts_are_four_way_per_cell_and_metric(study):
    v = study["verdicts"]
    assert set(v.claim) == {c.key for c in CLAIMS} | {CONJUNCTION.key}
    assert set(v.group) == {"all", "near", "far-natural", "far-synthetic"}  # covariate: not decided
    assert set(v[v.group != "all"].metric) == {"auroc", "fpr95"}
    cells = study.meta["decision"]["cells"]
    assert cells == 3 and (v.cells == 3).all() and study.meta["decision"]["interval"] == "images"
    for r in v[(v.group != "all") & v.lo.notna()].itertuples():
        assert r.n_boot >= min_resamples(cells) and r.level == pytest.approx(1 - 0.05 / cells)
        assert (r.verdict, r.cause) == four_way(r.lo, r.hi, MARGINS[r.metric]) or r.claim == "some_member_beats_gradnorm"
        assert r.supports == (r.verdict in get_claim(r.claim).supported_by)
    conj = v[v.claim == CONJUNCTION.key].set_index(["group", "metric"])
    halves = v.set_index(["claim", "group", "metric"]).verdict
    for (g, m), r in conj.iterrows():
        assert r.verdict == conjunction(halves[(CONJUNCTION.a, g, m)], halves[(CONJUNCTION.b, g, m)])


def test_a_study_decided_again_with_more_cells_widens_its_intervals(study):
    import copy

    again = copy.copy(study)
    again.tables = dict(study.tables)
    again.meta = dict(study.meta)
    again.redecide(5)
    a, b = study["verdicts"], again["verdicts"]
    one = (a.metric == "auroc") & (a.claim == "gradnorm_beats_msp")
    assert ((b[one].hi - b[one].lo).to_numpy() > (a[one].hi - a[one].lo).to_numpy()).all()
    assert (b.cells == 5).all() and again.meta["decision"]["cells"] == 5
    with pytest.raises(OODInputError, match="resamples"):
        again.redecide(60)  # 60 cells need 24,000 resamples


def test_family_verdict_follows_the_simultaneous_intervals(study):
    fam, v = study["family"], study["verdicts_nov"].set_index(["claim", "group"])
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


def test_roc_curves_of_the_headline_methods_have_the_recorded_aurocs(study):
    roc, m = study["roc"], study["metrics"]
    methods = [c for c in roc.columns if c not in KEYS]
    assert methods == [x for x in ROC_METHODS if x in study.scores]  # vim is not run with SMALL's methods
    assert {"msp", "energy", "knn", "gradnorm", "l1*msp"} <= set(methods)
    rows = [*[k for k in dict.fromkeys(m.ood) if k not in ("mean", "near", "far", "covariate")], *study.groups]
    assert list(dict.fromkeys(roc.ood)) == rows and len(roc) == len(rows) * len(FPR_GRID)
    for ood in rows:  # a set's, and a group's (its sets pooled with equal weight: the mean AUROC)
        for x in methods:
            assert abs(roc_auroc(roc, ood, x) - m[(m.method == x) & (m.ood == ood)].auroc.item()) < 0.5, (ood, x)
    assert len(roc.to_csv(index=False, float_format="%.10g")) < 200_000


def test_a_study_recorded_before_the_roc_table_still_loads(study, tmp_path):
    import json

    d = study.save(tmp_path / "old")
    (d / "roc.csv").unlink()
    meta = json.loads((d / "meta.json").read_text())
    meta["tables"] = [t for t in meta["tables"] if t != "roc"]
    (d / "meta.json").write_text(json.dumps(meta))
    old = Study.load(d)
    assert "roc" not in old and "metrics" in old
    with pytest.raises(OODInputError, match="no table 'roc'"):
        old["roc"]
    assert differences(Study.load(study.save(tmp_path / "new")), old) == [
        "roc: only in the first study (recorded before it existed?)"]
    assert differences(old, old) == []


def test_fewer_resamples_than_the_rule_are_flagged(study):
    assert study.meta["n_boot"] == 200 and study.meta["below_preregistered_n_boot"]
    assert set(TABLES) <= set(study.tables)


def test_report_tables(study):
    studies = {"embedded": study}
    t = report.answer_table(studies)
    assert list(t.index.get_level_values("cell")) == ["near", "far-natural", "far-synthetic"]
    assert t.map(lambda c: isinstance(c, str) and c != "").all().all()
    verdicts = report.verdict_table(studies, "far")  # the November rule's words
    assert set(np.unique(verdicts.values)) <= {"supported", "refuted", "inconclusive", ""}
    # one row per unit and cell (the sanity run left out), one column per comparison claim
    grid = bv.verdict_grid({"embedded": study, "mnist": study}).data
    assert grid.shape == (3, len(bv.COMPARISONS))
    assert {c.split("\u00a0")[0] for c in grid.values.ravel()} <= set(bv.SYMBOLS.values())
    v = study["verdicts"].set_index(["metric", "claim", "group"])
    r = v.loc[("auroc", "gradnorm_beats_msp", "near")]
    assert grid.loc[(short_pair("mnist"), "near"), get_claim("gradnorm_beats_msp").short] == \
        bv.verdict_mark(r.verdict, r.estimate)
    # the embedded run is a sanity run, not a unit: only "mnist" is counted
    n = bv.counts({"embedded": study, "mnist": study})
    assert (n.units == 1).all() and set(n.group) == {"near", "far-natural", "far-synthetic"}
    v = study["verdicts"]
    holds = v[(v.metric == "auroc") & (v.claim == "gradnorm_beats_msp")].set_index("group").supports
    assert n.set_index(["claim", "group"]).loc["gradnorm_beats_msp"].holds.to_dict() == holds.astype(int).to_dict()
    assert len(bv.rule_change_table({"mnist": study})) == 2 * (len(CLAIMS) - 2)  # near, far per comparison
    inc = bv.inconclusive_table({"mnist": study})
    assert len(inc) == int(((v.metric == "auroc") & (v.verdict == "inconclusive")).sum())
    assert set(bv.count_phrases({"mnist": study})) == {c.key for c in bv.COMPARISONS}
    held = bv.holds_phrases({"embedded": study, "mnist": study})
    assert held["gradnorm_beats_msp_far_natural"] == f"{int(holds['far-natural'])} of 1"
    assert len(held) == 3 * len(bv.COMPARISONS)
    reading = bv.reading_phrases({"mnist": study})["gradnorm_beats_msp"]
    n_held = int(holds.sum())
    assert reading == {0: "holds in none of the 3 unit × cells", 3: "holds in all 3 unit × cells"}.get(
        n_held, f"split: {n_held} of 3 unit × cells")


def test_seed_sign_changes_are_marked_once_per_difference(study):
    g = [x for x in study.groups if x != "covariate"][0]
    seeds = pd.DataFrame({"seed": [0, 1, 2, 0, 1, 2], "group": [g] * 6,
                          "quantity": ["diff:norm_helps_msp"] * 3 + ["diff:product_beats_v"] * 3,
                          "value": [1.0, -0.5, 2.0, 1.0, 0.5, 2.0]})
    s = Study(study.benchmark, {**study.tables, "seeds": seeds}, study.meta)
    r = report.seed_ranges(s).set_index("claim")
    assert r.loc["norm_helps_msp", ["min", "max"]].tolist() == [-0.5, 2.0]
    assert r.sign_changes.tolist() == [True, False]
    assert report.n_seed_differences({"a": s, "b": study}) == 2  # study has no seed runs
    changed = report.seed_sign_changes({s.benchmark: s})
    assert len(changed) == 1 and changed["min over seeds"].iloc[0] == -0.5
    assert report.answer_table({s.benchmark: s}).loc[(report.short_pair(s.benchmark), g)].iloc[0].endswith("†")
    assert not report.answer_table({s.benchmark: study}).iloc[:, 0].str.endswith("†").any()


def test_not_applicable_names_each_unfitted_detector_once_with_its_reason(study):
    m = study["metrics"].copy()
    name = m.method.iloc[0]
    m["note"] = np.where(m.method == name, "n/a: too few ID samples", None)
    s = Study(study.benchmark, {**study.tables, "metrics": m}, study.meta)
    t = report.not_applicable({s.benchmark: s})
    assert t.method.tolist() == [report.method_label(name)] and t.reason.tolist() == ["too few ID samples"]
    assert report.provenance({s.benchmark: s}).loc["not applicable"].iloc[0] == report.method_label(name)
    assert report.not_applicable({study.benchmark: study}).empty


def test_seed_summary():
    t = pd.DataFrame({"seed": [0, 1, 0, 1], "group": ["far"] * 4, "quantity": ["a", "a", "b", "b"],
                      "value": [1.0, 3.0, 2.0, 2.0]})
    s = seed_summary(t).set_index("quantity")
    assert s.loc["a", "mean"] == 2.0 and s.loc["a", "sd"] == pytest.approx(np.sqrt(2)) and s.loc["b", "sd"] == 0
