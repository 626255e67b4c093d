"""Tables, counts and figures the book builds from several studies (chapter *The evaluation*, *Discussion*).

Everything here reads :class:`ood_lib.findings.study.Study` tables; no number or verdict word is typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from .._checks import OODInputError
from ..data.benchmarks import DECISION_GROUPS
from ..findings.claims import CLAIMS, get_claim
from ..data.files import data_root
from ..run.evaluate import default_methods
from ..findings.labels import method_label, model_name, set_label, short_pair
from ..findings.study import Study, load_recorded, load_tables, run_study, seed_summary
from .tables import bold_best

# how the provenance table names each subsampled split
SUBSET_NAMES = {"n_id": "ID test", "n_ood": "per OOD set", "n_fit": "ID fit"}
# how a verdict on "the feature norm helps MSP" reads in a sentence
NORM_EFFECT = {"better": "helps", "worse": "hurts", "equivalent": "makes no difference",
               "inconclusive": "undecided"}


def load_studies(real: list[str], *, root: str | None, recorded: str | Path, **run: object) -> dict[str, Study]:
    """The live embedded study and each of ``real``: computed live where a data root is found
    (argument or ``$OOD_DATA_ROOT``), else read from ``recorded``; ``run`` goes to :func:`run_study`.
    Recorded training-seed tables (``<recorded>/<benchmark>/seeds.csv``) are attached to every study."""
    out = {"embedded": run_study("embedded", **run)}
    have_root = data_root(root or None) is not None
    rec = {} if have_root else load_recorded(recorded)
    for b in real:
        if have_root:
            out[b] = run_study(b, data_root=root or None, **run)
        elif b in rec:
            out[b] = rec[b]
        else:
            raise OODInputError(f"no data root and no recorded study of {b!r} under {recorded}")
    # training-seed runs are always recorded: five trainings are too slow for a build
    for b, t in load_tables(recorded, [b for b, st in out.items() if "seeds" not in st], "seeds.csv").items():
        out[b].tables["seeds"] = t
    return out


def provenance(studies: Mapping[str, Study]) -> pd.DataFrame:
    """One column per study: source (live / recorded), subset, methods left out, methods that could
    not be fitted (and why), ID accuracy, sizes, device, commit (and whether the tree had
    uncommitted changes), date (the library versions are in each study's ``meta``)."""
    rows = []
    for b, s in studies.items():
        m = s.meta
        cfg = m.get("config", {})
        sub = {k: cfg.get(k) for k in ("n_id", "n_ood", "n_fit") if cfg.get(k) is not None}
        left = sorted(set(default_methods(b)) - set(cfg.get("methods") or default_methods(b)))
        na = _unfitted(s)
        commit = str(m.get("commit", "unknown"))[:7] + (" + uncommitted changes" if m.get("dirty") else "")
        rows.append({"benchmark": short_pair(b), "source": s.source,
                     "subset": " · ".join(f"{v:,} {SUBSET_NAMES[k]}" for k, v in sub.items()) or "all images",
                     "left out": ", ".join(method_label(x) for x in left) or "—",
                     "not applicable": ", ".join(method_label(x) for x in na.method) or "—",
                     "ID accuracy (%)": m["id_accuracy"] if m.get("id_accuracy") is not None else np.nan,
                     "ID test images": m["sets"]["id_test"]["n"],
                     "OOD images": sum(v["n"] for k, v in m["sets"].items() if not k.startswith("id_")),
                     "device": m["device"], "commit": commit,
                     "created": str(m.get("created", ""))[:10]})
    t = pd.DataFrame(rows).set_index("benchmark")
    t["ID accuracy (%)"] = t["ID accuracy (%)"].map("{:.1f}".format)
    for col in ("ID test images", "OOD images"):  # as the subset column writes counts: 10,000
        t[col] = t[col].map("{:,}".format)
    return t.T


def _unfitted(study: Study) -> pd.DataFrame:
    """One metrics row per detector the study could not fit (its ``note`` starts "n/a")."""
    met = study["metrics"]
    if "note" not in met:
        return met[:0].assign(note=pd.Series(dtype=str))
    return met[met.note.fillna("").str.startswith("n/a")].drop_duplicates("method")


def not_applicable(studies: Mapping[str, Study]) -> pd.DataFrame:
    """The detectors a study could not fit, and why: one row per pair and detector (``pair``,
    ``method`` as displayed, ``reason``), from the ``n/a: …`` notes of its metrics table."""
    rows = [{"pair": short_pair(b), "method": method_label(r.method), "reason": r.note.removeprefix("n/a: ")}
            for b, s in studies.items() for r in _unfitted(s).itertuples()]
    return pd.DataFrame(rows, columns=["pair", "method", "reason"])


def group_value(study: Study, method: str, group: str, metric: str = "auroc") -> float:
    """A method's mean metric over one group of OOD sets."""
    m = study["metrics"]
    row = m[(m.method == method) & (m.ood == group)]
    if len(row) != 1:
        raise OODInputError(f"{study.benchmark}: no single {metric} row for {method!r} on group {group!r}")
    return float(row[metric].iloc[0])


def answer_table(studies: Mapping[str, Study]) -> pd.DataFrame:
    """The answer in one row per benchmark × model and decided cell (near, far-natural,
    far-synthetic): what the feature norm does to MSP (the AUROC verdict's reading and the
    difference), GradNorm's rank in the cell's November group (near or far), and the best method
    with its AUROC there. Every cell is computed from the study's tables; † marks a difference
    whose sign changes between the training seeds of a model trained here."""
    rows = []
    for s in studies.values():
        ranges = seed_ranges(s)
        changes = set(zip(ranges.group[ranges.sign_changes], ranges.claim[ranges.sign_changes]))
        v = s["verdicts"]
        v = v[v.metric == "auroc"].set_index(["claim", "group"])
        r = s["ranks"].set_index(["group", "method"])
        for cell in [g for g in DECISION_GROUPS if ("norm_helps_msp", g) in v.index]:
            g = cell.split("-")[0]  # far-natural → far
            gn = r.loc[(g, "gradnorm")]
            mark = " †" if (cell, "norm_helps_msp") in changes else ""
            rows.append({
                "pair": short_pair(s.benchmark), "cell": cell,
                "‖h‖₁ × MSP": f"{NORM_EFFECT[v.loc[('norm_helps_msp', cell), 'verdict']]} "
                              f"({v.loc[('norm_helps_msp', cell), 'estimate']:+.1f}){mark}",
                "GradNorm rank": f"{int(gn['rank'])} / {int(gn['n_methods'])} ({g})",
                "best method (AUROC)": f"{method_label(gn['best'])} ({gn['auroc_best']:.1f})"})
    return pd.DataFrame(rows).set_index(["pair", "cell"])


def verdict_table(studies: Mapping[str, Study], group: str) -> pd.DataFrame:
    """Claims (rows, short labels) × pairs (columns): the verdict words of the rule of 27 November
    2026 (``verdicts_nov``) for one of its groups; empty where a pair has no such group."""
    cols = {}
    for b, s in studies.items():
        v = s["verdicts_nov"] if "verdicts_nov" in s else s["verdicts"]
        sub = v[v.group == group].set_index("claim").verdict
        if len(sub):
            cols[short_pair(b)] = sub
    claims = [c for c in CLAIMS if (c.kind == "identity") == (group == "all")]
    t = pd.DataFrame(cols).reindex([c.key for c in claims]).fillna("")
    t.index = [c.short for c in claims]
    return t


def _pm(value: float, lo: float, hi: float) -> str:
    if not np.isfinite(value):
        return "—"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{value:.1f}"
    return f"{value:.1f} ±{max(value - lo, hi - value):.1f}"


def auroc_table(studies: Mapping[str, Study], methods: list[str], group: str, metric: str = "auroc"):
    """Methods (display names) × pairs: mean ``metric`` over ``group`` with the larger half-width of
    its 95 % interval ("98.5 ±0.4"); the best value of each column in bold. A pandas Styler."""

    vals, cells = {}, {}
    for b, s in studies.items():
        if group not in s.groups:
            continue
        m = s["metrics"]
        m = m[m.ood == group].set_index("method")
        col = short_pair(b)
        get = lambda x, c: float(m.loc[x, c]) if x in m.index and c in m.columns else np.nan  # noqa: E731
        vals[col] = [get(x, metric) for x in methods]
        lo, hi = ("auroc_lo", "auroc_hi") if metric == "auroc" else ("", "")
        cells[col] = [_pm(get(x, metric), get(x, lo), get(x, hi)) for x in methods]
    labels = [method_label(x) for x in methods]
    v = pd.DataFrame(vals, index=labels)
    c = pd.DataFrame(cells, index=labels)
    # compared at one decimal, as the cells show them: a tie on the page is bolded alike
    return bold_best(c.style, "min" if metric == "fpr95" else "max", decimals=1, values=v).set_table_styles(
        [{"selector": "td", "props": "white-space: nowrap;"}], overwrite=False)


def rank_table(studies: Mapping[str, Study]) -> pd.DataFrame:
    """Per pair and group: GradNorm's rank among all distinct methods, the pre-registered member's
    rank among the U·V members, and the best method."""
    rows = []
    for b, s in studies.items():
        r = s["ranks"].set_index(["group", "method"])
        for g in s.groups:
            gn, pre = r.loc[(g, "gradnorm")], r.loc[(g, "l1*msp")]
            rows.append({"pair": short_pair(b), "group": g,
                         "GradNorm rank": f"{int(gn['rank'])} / {int(gn['n_methods'])}",
                         "‖h‖₁·MSP rank among U·V": f"{int(pre['rank_uv'])} / {int(pre['n_uv'])}",
                         "best method": method_label(gn["best"]), "its AUROC": round(float(gn["auroc_best"]), 1)})
    return pd.DataFrame(rows).set_index(["pair", "group"])


def factor_rows(studies: Mapping[str, Study], v_term: str = "msp") -> pd.DataFrame:
    """Per pair and OOD set: AUROC of U = ‖h‖₁ alone, V alone, U·V, and the median-norm ratio OOD / ID."""
    out = []
    for b, s in studies.items():
        f = s["factors"]
        f = f[f.v_term == v_term]
        out.append(pd.DataFrame({
            "pair": short_pair(b), "OOD set": [set_label(k, b) for k in f.ood], "group": list(f.group),
            "U": f.auroc_u.round(1).to_numpy(), "V": f.auroc_v.round(1).to_numpy(),
            "U·V": f.auroc_uv.round(1).to_numpy(), "U·V − V": f.uv_minus_v.round(1).to_numpy(),
            "‖h‖₁ ratio": f.median_u_ratio.round(2).to_numpy()}))
    return pd.concat(out, ignore_index=True).set_index(["pair", "OOD set"])


def seed_rows(studies: Mapping[str, Study], benchmark: str | None = None) -> pd.DataFrame:
    """Mean ± s.d. over training seeds of each recorded quantity: quantities (rows) × group, for
    ``benchmark`` (default: every study with seed runs, columns prefixed by the pair)."""
    parts = []
    for b, s in studies.items():
        if "seeds" not in s.tables or (benchmark is not None and b != benchmark):
            continue
        t = seed_summary(s["seeds"])
        t["column"] = t.group if benchmark is not None else short_pair(b) + " · " + t.group
        t["cell"] = [f"{m:.1f} ±{sd:.1f}" for m, sd in zip(t["mean"], t["sd"])]
        t["row"] = [("AUROC " + method_label(q[6:])) if q.startswith("auroc:") else
                    ("difference: " + get_claim(q[5:]).short) if q.startswith("diff:") else "ID accuracy (%)"
                    for q in t.quantity]
        parts.append(t)
    if not parts:
        return pd.DataFrame()
    t = pd.concat(parts, ignore_index=True)
    out = t.pivot_table(index="row", columns="column", values="cell", aggfunc="first", sort=False).fillna("")
    return out.rename_axis(index=None, columns=None)


def seed_ranges(study: Study) -> pd.DataFrame:
    """One row per claim difference the study's training-seed runs record: group, claim, its
    smallest and largest value over seeds, and whether its sign changes between them (empty for a
    study without seed runs)."""
    cols = ["group", "claim", "min", "max", "sign_changes"]
    if "seeds" not in study:
        return pd.DataFrame(columns=cols)
    t = study["seeds"]
    t = t[t.quantity.str.startswith("diff:") & t.group.isin(DECISION_GROUPS)]  # the cells the verdicts decide
    r = t.groupby(["group", "quantity"], sort=False).value.agg(["min", "max"]).reset_index()
    r["claim"] = r.quantity.str.removeprefix("diff:")
    r["sign_changes"] = (r["min"] < 0) & (r["max"] > 0)
    return r[cols]


def seed_sign_changes(studies: Mapping[str, Study]) -> pd.DataFrame:
    """The claim differences whose sign changes between training seeds: pair, group, claim, the
    smallest and largest difference over seeds. A verdict there rests on seed 0 alone."""
    rows = [{"pair": short_pair(b), "group": r.group, "claim": get_claim(r.claim).short,
             "min over seeds": round(float(r.min), 2), "max over seeds": round(float(r.max), 2)}
            for b, s in studies.items() for r in seed_ranges(s).itertuples() if r.sign_changes]
    cols = ["pair", "group", "claim", "min over seeds", "max over seeds"]
    return pd.DataFrame(rows, columns=cols).set_index(["pair", "group"])


def n_seed_differences(studies: Mapping[str, Study]) -> int:
    """How many (pair, group, claim) differences the seed runs record."""
    return sum(len(seed_ranges(s)) for s in studies.values())


def imagenet_units(studies: Mapping[str, Study]) -> dict[str, Study]:
    """The studies of a 1,000-class (ImageNet-1k) model."""
    from ..data.benchmarks import BENCHMARKS

    return {b: s for b, s in studies.items() if b in BENCHMARKS and BENCHMARKS[b].num_classes == 1000}


def beside_anchors(studies: Mapping[str, Study]) -> pd.DataFrame:
    """GradNorm against MSP on ImageNet: the published anchors (GradNorm paper, OpenOOD v1.5) and
    this study's ImageNet units per cell (near, far-natural), AUROC (%) and the direction."""
    from ..findings.reference import imagenet_anchors

    a = imagenet_anchors()
    a = a[a.method.isin(["msp", "gradnorm"]) & a.setting.isin(["near", "far", "mean"])]
    rows = []
    for (src, model, setting), t in a.groupby(["source", "model", "setting"], sort=False):
        auc = t.set_index("method").auroc
        rows.append({"source": src, "model": model, "OOD": setting, "MSP": auc.get("msp", np.nan),
                     "GradNorm": auc.get("gradnorm", np.nan)})
    for b, s in imagenet_units(studies).items():
        m = s["metrics"].set_index(["method", "ood"]).auroc
        cells = _cell_sets(b, s)
        for cell in ("near", "far-natural"):
            if cell in cells:
                mean = lambda x: float(np.mean([m[(x, k)] for k in cells[cell]]))  # noqa: E731
                rows.append({"source": "this study", "model": model_name(b),
                             "OOD": f"{cell}: {', '.join(set_label(k, b) for k in cells[cell])}",
                             "MSP": mean("msp"), "GradNorm": mean("gradnorm")})
    t = pd.DataFrame(rows)
    t["GradNorm − MSP"] = t.GradNorm - t.MSP
    return t


def _cell_sets(benchmark: str, study: Study) -> dict[str, list[str]]:
    from ..data.benchmarks import get_benchmark

    present = set(study["metrics"].ood)
    out: dict[str, list[str]] = {}
    for o in get_benchmark(benchmark).ood:
        if o.key in present:
            out.setdefault(o.decision_group, []).append(o.key)
    return out
