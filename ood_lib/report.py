"""Tables and sentences the book builds from several studies (chapter *The evaluation*, *Discussion*).

Everything here reads :class:`ood_lib.study.Study` tables; no number or verdict word is typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ._checks import OODInputError
from .benchmarks import get_benchmark
from .claims import CLAIMS
from .data import data_root
from .study import Study, load_recorded, run_study

MODEL_NAMES = {"mnist_cnn": "small CNN", "resnet20": "ResNet-20", "densenet_bc100": "DenseNet-BC-100",
               "efficientnet_lite0": "EfficientNet-Lite0", "resnet50": "ResNet-50", "bit_r101x1": "BiT-S-R101x1"}
# how a verdict on "the feature norm helps MSP" reads in a sentence
NORM_EFFECT = {"supported": "helps", "refuted": "hurts", "inconclusive": "makes no clear difference to"}


def model_name(benchmark: str) -> str:
    """The display name of a benchmark's model."""
    arch = get_benchmark(benchmark).model.arch
    return MODEL_NAMES.get(arch, arch)


def pair_name(benchmark: str) -> str:
    """"benchmark (model)", the label of one benchmark × model pair."""
    return f"{benchmark} ({model_name(benchmark)})"


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
    for b, st in out.items():  # training-seed runs are always recorded: five trainings are too slow for a build
        f = Path(recorded) / b / "seeds.csv"
        if "seeds" not in st.tables and f.is_file():
            st.tables["seeds"] = pd.read_csv(f)
    return out


def provenance(studies: Mapping[str, Study]) -> pd.DataFrame:
    """One row per study: source (live / recorded), model, ID accuracy, device, commit, versions."""
    from .evaluate import default_methods

    rows = []
    for b, s in studies.items():
        m = s.meta
        cfg = m.get("config", {})
        sub = {k: cfg.get(k) for k in ("n_id", "n_ood", "n_fit") if cfg.get(k) is not None}
        left = sorted(set(default_methods(b)) - set(cfg.get("methods") or default_methods(b)))
        rows.append({"benchmark": b, "model": model_name(b), "source": s.source,
                     "subset": ", ".join(f"{k} = {v:,}" for k, v in sub.items()) or "all images",
                     "left out": ", ".join(left) or "—",
                     "ID accuracy (%)": 100 * m["id_accuracy"] if m.get("id_accuracy") is not None else np.nan,
                     "ID test images": m["sets"]["id_test"]["n"],
                     "OOD sets": ", ".join(k for k in m["sets"] if not k.startswith("id_")),
                     "device": m["device"], "commit": str(m.get("commit", "unknown"))[:10],
                     "torch": m["versions"]["torch"], "created": m.get("created", "")})
    return pd.DataFrame(rows).set_index("benchmark")


def verdict_matrix(studies: Mapping[str, Study]) -> pd.DataFrame:
    """Claims (rows) × benchmark / group (columns): the verdict words the pre-registered rules gave."""
    cols = {}
    for b, s in studies.items():
        v = s["verdicts"]
        for g in ["all", *s.groups]:
            sub = v[v.group == g].set_index("claim")
            if len(sub):
                cols[(pair_name(b), g)] = sub.verdict
    t = pd.DataFrame(cols).reindex([c.key for c in CLAIMS])
    t.index = [c.statement for c in CLAIMS]
    return t.fillna("")


def verdict_counts(studies: Mapping[str, Study], claim: str) -> dict[str, int]:
    """How often each verdict was given to ``claim`` over every benchmark × group."""
    words = pd.concat([s["verdicts"].loc[lambda d: d.claim == claim, "verdict"] for s in studies.values()])
    return {w: int((words == w).sum()) for w in ("supported", "refuted", "inconclusive", "not run")}


def count_text(studies: Mapping[str, Study], claim: str) -> str:
    """``"supported 3, refuted 2, inconclusive 1"``: :func:`verdict_counts` as text, zeros left out."""
    return ", ".join(f"{w} {n}" for w, n in verdict_counts(studies, claim).items() if n)


def group_value(study: Study, method: str, group: str, metric: str = "auroc") -> float:
    """A method's mean metric over one group of OOD sets."""
    m = study["metrics"]
    row = m[(m.method == method) & (m.ood == group)]
    if len(row) != 1:
        raise OODInputError(f"{study.benchmark}: no single {metric} row for {method!r} on group {group!r}")
    return float(row[metric].iloc[0])


def answer(study: Study, group: str) -> str:
    """One sentence per benchmark × group, every word that carries a result computed."""
    v = study["verdicts"].set_index(["claim", "group"])
    r = study["ranks"].set_index(["group", "method"])
    effect = NORM_EFFECT.get(v.loc[("norm_helps_msp", group), "verdict"], "was not measured against")
    gn = r.loc[(group, "gradnorm")]
    return (f"on {pair_name(study.benchmark)}, {group} OOD, the feature norm {effect} MSP "
            f"(Δ AUROC {v.loc[('norm_helps_msp', group), 'estimate']:+.1f}), GradNorm ranks {int(gn['rank'])} of "
            f"{int(gn['n_methods'])} methods, and the best is {gn['best']} ({gn['auroc_best']:.1f})")


def headline_table(studies: Mapping[str, Study], methods: list[str], group: str) -> pd.DataFrame:
    """Methods (rows) × benchmark (columns): mean AUROC over ``group`` as "value [lo, hi]"."""
    cols = {}
    for b, s in studies.items():
        if group not in s.groups:
            continue
        m = s["metrics"]
        m = m[(m.ood == group)].set_index("method")
        cols[pair_name(b)] = [
            "" if x not in m.index or not np.isfinite(m.loc[x, "auroc"]) else
            f"{m.loc[x, 'auroc']:.1f}" + ("" if not np.isfinite(m.loc[x, "auroc_lo"])
                                          else f" [{m.loc[x, 'auroc_lo']:.1f}, {m.loc[x, 'auroc_hi']:.1f}]")
            for x in methods]
    return pd.DataFrame(cols, index=methods)
