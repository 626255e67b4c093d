"""The study of one benchmark × model, live or recorded (chapter *The evaluation*).

:func:`run_study` computes, from one pass of every method over the benchmark:

* ``metrics`` — the runner's rows (per set, per group, mean) with paired-bootstrap AUROC intervals
  for the headline methods;
* ``verdicts`` — every pre-registered claim of :mod:`ood_lib.findings.claims`, per OOD group: the AUROC
  difference, its 95 % interval and the verdict the rule gives;
* ``family`` — each gradient-free U·V member against GradNorm with simultaneous intervals;
* ``ranks`` — where GradNorm and the pre-registered member rank;
* ``selection`` — a best member chosen without peeking: for each OOD set, the member best on the
  *other* sets, reported on the held-out one;
* ``factors``, ``hist`` — why: AUROC of U alone, V alone and U·V per set, and the
  distributions of ‖h‖₁ and max p (small histograms, enough to draw the figures again);
* ``roc`` — the ROC curves of :data:`ROC_METHODS` per OOD set and per group (its sets pooled with
  equal weight), read on a 201-point FPR grid (:func:`ood_lib.findings.roc.roc_table`).

:meth:`Study.save` writes the tables as CSV and the provenance (commit, versions, device, data and
weight fingerprints, configuration) as JSON; :meth:`Study.load` reads them back, marked recorded.
A study recorded before a table existed loads without it (its ``meta["tables"]`` lists what it has).
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import explain, roc, verdicts as four
from .._checks import OODInputError
from ..data.benchmarks import Benchmark, get_benchmark
from ..cache import atomic_write_bytes
from .claims import CLAIMS, IDENTITY_TOL, LEVEL, N_BOOT, NOT_RUN, identity_verdict
from ..run.config import RunConfig
from ..detectors import canonical
from ..detectors.base import head_of
from ..run.evaluate import C_PASS_AUTOGRAD, EXPECTATION_AUTOGRAD_MAX_CLASSES, default_methods, prepare, score_methods
from ..scores.registry import GRADIENT_SCORES
from ..stats.paired import PairedBootstrap, verdict
from ..run.results import device_label, in_mean, metadata
from ..scores.terms import u_term
from ..scores.closed_forms import PREREGISTERED, closed_form, uv_members

HEADLINE = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "react", "knn", "vim", "ash", "scale", "dice", "gen",
            "fdbd", "nnguide", "gradnorm", "exgrad", "exgrad_flipped", "l1*one", "one*pu_l1", "l1*msp")
TABLES = ("metrics", "verdicts", "verdicts_nov", "family", "ranks", "selection", "factors", "hist", "roc")
# the ROC figure's methods: output baselines, the strongest feature baselines, GradNorm, the pre-registered member
ROC_METHODS = ("msp", "energy", "knn", "vim", "gradnorm", PREREGISTERED)
VOLATILE = ("seconds", "from_cache")  # columns that differ between two identical runs: not recorded
U_NAME, MSP_NAME = "l1*one", "one*msp"  # ‖h‖₁ and max p, as oriented scores (both positive)


@dataclass
class Study:
    """The tables of one benchmark × model and their provenance; ``source`` is "live" or "recorded"."""

    benchmark: str
    tables: dict[str, pd.DataFrame]
    meta: dict[str, Any]
    source: str = "live"
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)  # live only
    replicates: Any = field(default=None, repr=False)  # live only: what the verdicts are decided on
    decision_groups: dict[str, list[str]] = field(default_factory=dict, repr=False)  # live only
    id_correct: np.ndarray | None = field(default=None, repr=False)  # live only: ID test images classified right

    def redecide(self, cells: int) -> None:
        """Decide the claims again at the Bonferroni level of ``cells`` cells (several units
        recorded together: the rule of 7 December 2026 counts their cells jointly)."""
        if self.replicates is None:
            raise OODInputError("only a live study can be decided again (a recorded one keeps no resamples)")
        ident = [{**r, "cells": int(cells)} for r in
                 self.tables["verdicts"].loc[lambda d: d.metric == "identity"].to_dict("records")]
        self.tables["verdicts"] = four.verdict_table(self.replicates, self.decision_groups, uv_members(),
                                                     cells=cells, identities=ident)
        self.meta["decision"] = {**self.meta.get("decision", {}), "cells": int(cells)}

    def __contains__(self, name: str) -> bool:
        return name in self.tables

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self.tables:
            raise OODInputError(f"no table {name!r}; tables: {', '.join(self.tables)}")
        return self.tables[name]

    @property
    def groups(self) -> list[str]:
        """The OOD groups present, in table order."""
        return [g for g in ("near", "far", "covariate") if g in set(self["metrics"].group)]

    def save(self, directory: str | Path) -> Path:
        """Write ``<table>.csv`` for every table and ``meta.json`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, t in self.tables.items():
            atomic_write_bytes(t.to_csv(index=False, float_format="%.10g").encode(), d / f"{name}.csv")
        atomic_write_bytes(json.dumps(self.meta, indent=1, sort_keys=True, default=str).encode(), d / "meta.json")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Study":
        """Read a study written by :meth:`save`; its ``source`` is "recorded". The tables read are
        those its ``meta.json`` lists (a study recorded before the ``roc`` table existed has none)."""
        d = Path(directory)
        if not (d / "meta.json").is_file():
            raise OODInputError(f"{d} holds no recorded study (no meta.json)")
        meta = json.loads((d / "meta.json").read_text())
        missing = [t for t in meta.get("tables", TABLES) if not (d / f"{t}.csv").is_file()]
        if missing:
            raise OODInputError(f"recorded study {d} lacks {', '.join(missing)}.csv")
        names = [*meta.get("tables", TABLES), *(["seeds"] if (d / "seeds.csv").is_file() else [])]
        tables = {t: pd.read_csv(d / f"{t}.csv", keep_default_na=False, na_values=[""]) for t in names}
        return cls(meta["benchmark"], tables, meta, "recorded")


def git_state(folder: str | Path | None = None) -> dict[str, Any]:
    """The commit the code runs from (or of the clone holding ``folder``) and whether tracked files
    outside ``results/`` differ from it (recording one study writes results: that is not a change of
    the code; "unknown" outside a clone)."""
    here = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":!/results"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    if head.returncode:
        return {"commit": "unknown", "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _claim_methods() -> list[str]:
    return [m for c in CLAIMS for m in (c.a, c.b) if c.kind != "family"] + ["gradnorm"]


def _identity(claim, scores, prep) -> dict[str, Any]:
    """Largest |autograd − closed form| over every image, in units of the bounded V term.

    The autograd detector differentiates the head in float64 on the cached features, so the closed
    form is evaluated on the same float64 logits W h + b (not on the float32 logits of the forward
    pass, which differ from them by rounding)."""
    g = GRADIENT_SCORES[claim.b]
    head = head_of(prep.model)
    w = head.weight.detach().cpu().double()
    b = None if head.bias is None else head.bias.detach().cpu().double()
    worst = 0.0
    for k, a in scores[claim.a].items():
        h = prep.float64(k)[0]
        f = h @ w.T + (0 if b is None else b)
        c = closed_form(claim.b, h, f).numpy() * g.orientation
        scale = g.factor(f.shape[1], 1.0) * u_term(g.u, h).numpy()
        worst = max(worst, float(np.max(np.abs(a - c) / scale)))
    return {"estimate": worst, "lo": np.nan, "hi": np.nan, "verdict": identity_verdict(worst),
            "rule": f"max difference in V units ≤ {IDENTITY_TOL:g}"}


def _verdict_rows(pb: PairedBootstrap, scores, groups: dict[str, list[str]], members: list[str],
                  prep) -> pd.DataFrame:
    rows = []
    for claim in CLAIMS:
        base = {"claim": claim.key, "source": claim.source, "statement": claim.statement, "a": claim.a,
                "b": claim.b, "direction": claim.direction}
        need = [claim.b] + ([claim.a] if claim.kind != "family" else [])
        absent = [m for m in need if m not in scores]
        if claim.kind == "identity":
            row = ({"estimate": np.nan, "lo": np.nan, "hi": np.nan, "verdict": NOT_RUN,
                    "rule": f"{', '.join(absent)} not computed on this benchmark (C backward passes per image)"} if absent
                   else _identity(claim, scores, prep))
            rows.append({**base, "group": "all", **row})
            continue
        for group, sets in groups.items():
            if absent:
                rows.append({**base, "group": group, "estimate": np.nan, "lo": np.nan, "hi": np.nan,
                             "verdict": NOT_RUN, "rule": f"{', '.join(absent)} not applicable here"})
            elif claim.kind == "family":
                fam = pb.family(members, claim.b, sets=sets, level=LEVEL, direction=claim.direction)
                best = fam.loc[fam.estimate.idxmax()]
                v = ("supported" if (fam.lo > 0).any() else "refuted" if (fam.hi < 0).all() else "inconclusive")
                rows.append({**base, "group": group, "estimate": float(best.estimate), "lo": float(best.lo),
                             "hi": float(best.hi), "verdict": v, "best_member": best.member,
                             "n_members_above": int((fam.lo > 0).sum()), "n_members": len(fam),
                             "rule": "max-statistic simultaneous 95 % intervals"})
            else:
                d = pb.difference(claim.a, claim.b, sets=sets, level=LEVEL)
                rows.append({**base, "group": group, "estimate": d.estimate, "lo": d.lo, "hi": d.hi,
                             "verdict": verdict(d.lo, d.hi, claim.direction),
                             "rule": f"paired bootstrap 95 % interval, {pb.n_boot} resamples"})
    return pd.DataFrame(rows)


def _ranks(metrics: pd.DataFrame, members: list[str], groups: list[str]) -> pd.DataFrame:
    rows = []
    for g in groups:
        m = metrics[(metrics.ood == g) & metrics.auroc.notna()].set_index("method")
        distinct = m[m.index == m.canonical].auroc
        uv = m.loc[[x for x in members if x in m.index], "auroc"]
        for name in ("gradnorm", PREREGISTERED):
            a = float(m.loc[name, "auroc"])
            rows.append({"group": g, "method": name, "auroc": a,
                         "rank": int((distinct > a).sum()) + 1, "n_methods": len(distinct),
                         "rank_uv": int((uv.drop(name, errors="ignore") > a).sum()) + 1,
                         "n_uv": len(uv.drop(name, errors="ignore")) + 1,
                         "best": str(distinct.idxmax()), "auroc_best": float(distinct.max())})
    return pd.DataFrame(rows)


def _selection(pb: PairedBootstrap, members: list[str], sets: list[str], group_of: dict[str, str]) -> pd.DataFrame:
    """Leave one OOD set out: the member with the best mean AUROC on the others, scored on it."""
    rows = []
    for k in sets:
        rest = [s for s in sets if s != k]
        if not rest:
            continue
        chosen = str(pb.auroc(rest)[members].idxmax())
        held = pb.auroc([k])
        rows.append({"held_out": k, "group": group_of[k], "chosen": chosen, "auroc_chosen": float(held[chosen]),
                     "auroc_gradnorm": float(held["gradnorm"]), "auroc_preregistered": float(held[PREREGISTERED])})
    return pd.DataFrame(rows)


def _why(scores, groups_of: dict[str, str]) -> dict[str, pd.DataFrame]:
    s = {k: {"u": scores[U_NAME][k], "msp": scores[MSP_NAME][k], "pu_l1": scores["one*pu_l1"][k],
             "l1*msp": scores[PREREGISTERED][k], "gradnorm": scores["gradnorm"][k]} for k in scores[U_NAME]}
    factors = pd.concat([
        explain.factor_table(s, groups_of, u="u", v="msp", uv="l1*msp").assign(v_term="msp"),
        explain.factor_table(s, groups_of, u="u", v="pu_l1", uv="gradnorm").assign(v_term="pu_l1"),
    ], ignore_index=True)
    u = {k: v["u"] for k, v in s.items()}
    msp = {k: v["msp"] for k, v in s.items()}
    hist = pd.concat([explain.histograms(u, "l1", log=True), explain.histograms(msp, "msp")], ignore_index=True)
    return {"factors": factors, "hist": hist}


def run_study(benchmark: str | Benchmark = "embedded", config: RunConfig | None = None, *, n_boot: int = N_BOOT,
              seeds: tuple[int, ...] | None = None, cells: int | None = None, decide_boot: int | None = None,
              **overrides: Any) -> Study:
    """Every method on ``benchmark``, the pre-registered verdicts, and the tables that explain them.

    ``overrides`` are :class:`RunConfig` fields; ``config.methods`` (default: every method) always
    gains the methods the claims and tables compare (not the C-pass autograd expectations on a
    benchmark with more than 100 classes). ``n_boot`` below :data:`ood_lib.findings.claims.N_BOOT` is allowed
    for quick looks, and the metadata says so.

    The ``verdicts`` table follows the rules of December 2026 (:mod:`ood_lib.findings.verdicts`):
    ``seeds`` (a model trained here; the first is the run's seed) adds the training seeds to the
    interval, ``cells`` is the Bonferroni count (default: this run's own cells) and
    ``decide_boot`` the resamples (default: the fewest the rule allows). ``verdicts_nov`` keeps
    the verdicts of the rule of 27 November 2026 for comparison.
    """
    cfg = (config or RunConfig()).replace(**overrides).replace(bootstrap=0)
    bench = get_benchmark(benchmark)  # resolved once: the run carries the object
    members = uv_members()
    names = default_methods(bench) if cfg.methods is None else list(cfg.methods)
    many = bench.num_classes > EXPECTATION_AUTOGRAD_MAX_CLASSES
    needed = [*_claim_methods(), *members, U_NAME, MSP_NAME, PREREGISTERED]  # what the tables compare
    names += [m for m in dict.fromkeys([*(HEADLINE if cfg.methods is None else ()), *needed])
              if m not in names and not (many and m in C_PASS_AUTOGRAD)]  # C backward passes per image: too many
    prep = prepare(bench, cfg, with_train=True)
    rows, scores, notes = score_methods(prep, names)
    metrics = pd.DataFrame(rows).drop(columns=list(VOLATILE))
    group_of = {k: prep.splits[k].group for k in prep.ood_keys}
    groups = {g: [k for k in prep.ood_keys if group_of[k] == g] for g in ("near", "far", "covariate")}
    groups = {g: v for g, v in groups.items() if v}
    wanted = {*HEADLINE, *_claim_methods(), *members}
    boot = [m for m in scores if canonical(m) == m or m in wanted]  # each distinct method, and every name compared
    pb = PairedBootstrap({m: scores[m]["id_test"] for m in boot},
                         {k: {m: scores[m][k] for m in boot} for k in prep.ood_keys}, n_boot=n_boot, seed=cfg.seed)
    metrics["auroc_lo"] = metrics["auroc_hi"] = np.nan
    for i, r in metrics.iterrows():
        if r.method in HEADLINE and r.method in scores:
            sets = groups.get(r.ood, in_mean(group_of) if r.ood == "mean" else [r.ood])
            metrics.loc[i, ["auroc_lo", "auroc_hi"]] = pb.interval(r.method, sets=sets, level=LEVEL)
    old = _verdict_rows(pb, scores, groups, members, prep)
    dgroups = four.decision_groups({o.key: o.decision_group for o in bench.ood if o.key in group_of})
    reps, decision = four.study_replicates(bench, cfg, prep, scores, members, seeds, cells or four.n_cells(dgroups), decide_boot)
    tables = {"metrics": metrics, "verdicts": four.verdict_table(reps, dgroups, members, cells=decision["cells"],
                                                                 identities=four.identity_rows(old, decision)),
              "verdicts_nov": old}
    tables["family"] = pd.concat([pb.family(members, "gradnorm", sets=v, level=LEVEL).assign(group=g)
                                  for g, v in groups.items()], ignore_index=True)
    tables["ranks"] = _ranks(metrics, members, list(groups))
    tables["selection"] = _selection(pb, members, [k for k in prep.ood_keys if group_of[k] != "covariate"], group_of)
    tables.update(_why(scores, group_of))
    tables["roc"] = roc.roc_table(scores, group_of, [m for m in ROC_METHODS if m in scores])
    meta = metadata(prep, notes, device_label(prep.device))
    meta.update(git_state(), n_boot=n_boot, level=LEVEL, below_preregistered_n_boot=n_boot < N_BOOT, decision=decision,
                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                tables=list(TABLES), claims=[c.key for c in CLAIMS], headline=list(HEADLINE))
    f = prep.feats["id_test"]
    correct = (f.logits.argmax(1) == f.labels) if (f.labels >= 0).all() else None
    return Study(bench.name, tables, meta, "live", scores, reps, dgroups, correct)


def load_recorded(directory: str | Path) -> dict[str, Study]:
    """Every study recorded under ``directory`` (one folder per benchmark), by benchmark name."""
    d = Path(directory)
    if not d.is_dir():
        raise OODInputError(f"no recorded results at {d}")
    return {s.benchmark: s for s in (Study.load(p) for p in sorted(d.iterdir()) if (p / "meta.json").is_file())}


def load_tables(recorded: str | Path, benchmarks, name: str) -> dict[str, pd.DataFrame]:
    """``{benchmark: <recorded>/<benchmark>/<name>}`` for each of ``benchmarks`` that has that file
    (the tables recorded beside a study: ``seeds.csv``, ``depth.csv``, ``gaia.csv``, …)."""
    out = {}
    for b in benchmarks:
        f = Path(recorded) / b / name
        if f.is_file():
            out[b] = pd.read_csv(f)
    return out


def differences(a: Study, b: Study, tol: float = 1e-6, rtol: float = 0.0) -> list[str]:
    """Where two studies' tables disagree: numbers beyond ``tol + rtol·|b|``, any other value exactly;
    a table of :data:`TABLES` that only one of them holds is a difference too."""
    out = []
    for name in TABLES:
        if (name in a) != (name in b):
            out.append(f"{name}: only in the {'first' if name in a else 'second'} study (recorded before it existed?)")
            continue
        if name not in a:
            continue
        x, y = a[name].reset_index(drop=True), b[name].reset_index(drop=True)
        if list(x.columns) != list(y.columns) or len(x) != len(y):
            out.append(f"{name}: shape or columns differ ({x.shape} {list(x.columns)} vs {y.shape} {list(y.columns)})")
            continue
        for col in x.columns:
            u, v = x[col], y[col]
            if pd.api.types.is_numeric_dtype(u) and pd.api.types.is_numeric_dtype(v):
                u, v = u.to_numpy(float), v.to_numpy(float)
                bad = ~((np.isnan(u) & np.isnan(v)) | (np.abs(u - v) <= tol + rtol * np.abs(v)))
            else:
                bad = (u.astype(object).where(u.notna(), "").astype(str).to_numpy()
                       != v.astype(object).where(v.notna(), "").astype(str).to_numpy())
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                out.append(f"{name}.{col}: {int(bad.sum())} rows differ, first row {i}: {x[col].iloc[i]!r} vs {y[col].iloc[i]!r}")
    return out


def seed_table(benchmark: str | Benchmark, seeds: tuple[int, ...] = (0, 1, 2, 3, 4), config: RunConfig | None = None,
               **overrides: Any) -> pd.DataFrame:
    """Training-seed variance of a model trained here: per seed, the mean AUROC over each group
    (near, far, covariate) and each far cell (far-natural, far-synthetic) of the headline methods
    and every comparison claim's difference (point values; the verdicts' intervals are in
    :func:`run_study`). Columns: seed, group, quantity, value.

    The seed drives the training, the subsets and any generated set (noise), as in :class:`RunConfig`.
    """
    cfg = (config or RunConfig()).replace(**overrides).replace(bootstrap=0)
    bench = get_benchmark(benchmark)
    if bench.model.train_epochs is None:
        raise OODInputError(f"{bench.name!r} uses a pretrained checkpoint: its variance is the bootstrap's, not a seed's")
    names = list(dict.fromkeys([*HEADLINE, *_claim_methods()]))
    rows = []
    for seed in seeds:
        prep = prepare(bench, cfg.replace(seed=int(seed)), with_train=True)
        res, _, _ = score_methods(prep, names)
        m = pd.DataFrame(res)
        rows.append({"seed": seed, "group": "all", "quantity": "id_accuracy", "value": float(prep.id_accuracy)})
        cells = {o.decision_group: [x.key for x in bench.ood if x.decision_group == o.decision_group and x.key in
                                    set(m.ood)] for o in bench.ood if o.group == "far"}
        for g in [g for g in ("near", "far", "covariate") if g in set(m.ood)] + [g for g, v in cells.items() if v]:
            a = (m[m.ood == g] if g not in cells else m[m.ood.isin(cells[g])].groupby("method", sort=False)
                 .auroc.mean().rename("auroc").reset_index()).set_index("method").auroc
            rows += [{"seed": seed, "group": g, "quantity": f"auroc:{x}", "value": float(a[x])} for x in HEADLINE if x in a]
            rows += [{"seed": seed, "group": g, "quantity": f"diff:{c.key}", "value": float(a[c.a] - a[c.b])}
                     for c in CLAIMS if c.kind == "difference" and c.a in a and c.b in a]
    return pd.DataFrame(rows)


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± s.d. (ddof 1) over seeds of each (group, quantity) of :func:`seed_table`."""
    return (table.groupby(["group", "quantity"], sort=False).value
            .agg(mean="mean", sd="std", n="count").reset_index())
