"""*Is GradNorm worth it on my model?* — the study on your own model and data in one call
(:func:`study`, exported as ``ood_lib.study``; chapter *Your model*), and its one-page report.

:func:`study` builds an :class:`~ood_lib.data.own.OwnBenchmark` from the model and data given,
runs :func:`ood_lib.findings.own.own_study` on it (features extracted once and cached, every
closed form, the fitted baselines the fitting set allows, the paired comparisons and the
verdicts of the pre-registration, the mechanism's prediction, GradNorm by autograd on a sample)
and returns an :class:`OwnStudy`: the tables (pandas), :meth:`OwnStudy.figures`, and the report
as self-contained HTML (:meth:`OwnStudy.to_html`, figures inline as PNG) or Markdown.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .._checks import OODInputError
from ..cache import atomic_write_bytes
from ..data.own import own_benchmark, preprocessing_for
from ..findings.claims import N_BOOT, get_claim
from ..findings.labels import method_label
from ..findings.own import IDENTITY_IMAGES, own_study
from ..findings.study import Study
from ..scores.closed_forms import PREREGISTERED
from .plots import DPI

__all__ = ["ANSWER_CLAIMS", "OwnStudy", "study"]

# the claims that answer "is GradNorm worth it?", in the order the report states them
ANSWER_CLAIMS = ("gradnorm_beats_msp", "gradnorm_beats_energy", "preregistered_beats_gradnorm",
                 "some_member_beats_gradnorm")
SHOWN = ("msp", "energy", "maxlogit", "knn", "mahalanobis", "vim", "react", "gradnorm", "one*pu_l1", "l1*one",
         PREREGISTERED)
CELLS = ("near", "far-natural", "far-synthetic")
WORTH_IT_COLUMNS = ["cell", "worth it?", "GradNorm vs MSP", "GradNorm vs Energy", "‖h‖₁·MSP vs GradNorm"]


@dataclass
class OwnStudy:
    """The study of one model on the data given: ``tables`` (as :class:`~ood_lib.findings.study.Study`
    holds them, plus ``mechanism`` and ``identity``), ``meta`` (provenance), and the report."""

    study: Study

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return self.study.tables

    @property
    def meta(self) -> dict[str, Any]:
        return self.study.meta

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.study[name]

    def answer(self, metric: str = "auroc") -> pd.DataFrame:
        """The verdicts that answer the question, one row per claim and decision cell: estimate
        (percentage points), its interval, the four-way verdict and whether it supports the claim."""
        v = self["verdicts"]
        v = v[v.claim.isin(ANSWER_CLAIMS) & (v.metric == metric)]
        cols = ["claim", "statement", "group", "estimate", "lo", "hi", "verdict", "supports", "best_member"]
        return v[cols].reset_index(drop=True)

    def performance(self, metric: str = "auroc", per_set: bool = True) -> pd.DataFrame:
        """``metric`` (percent) of the shown methods, per OOD set (unless ``per_set`` is False) and
        group: methods as rows, by display name."""
        m = self["metrics"]
        m = m[m.method.isin(SHOWN) & m.note.eq("")]
        t = m.pivot_table(index="method", columns="ood", values=metric, sort=False)
        t.index = [method_label(i) for i in t.index]
        groups = ("near", "far", "covariate", "mean")
        return t[[c for c in dict.fromkeys(m.ood) if c in t.columns and (per_set or c in groups)]]

    def figures(self) -> dict[str, Any]:
        """``{"verdicts": …, "roc": …}``: the AUROC differences of the answering claims with their
        intervals per cell, and the ROC curves per group (matplotlib figures)."""
        from .roc_plot import roc_figure

        groups = [g for g in ("near", "far", "covariate") if (self["roc"].group == g).any()]
        return {"verdicts": verdict_figure(self.answer()), "roc": roc_figure(self["roc"], groups=groups)}

    def _setup(self) -> list[tuple[str, str]]:
        m, p = self.meta, self.meta.get("preprocessing", {})
        sets = m.get("sets", {})
        marks = m.get("marks", {})
        ood = ", ".join(f"{k} ({marks.get(k, '')}, {v['n']} images)" for k, v in sets.items()
                        if k not in ("id_test", "id_train"))
        fit = f"{sets['id_train']['n']} images" if "id_train" in sets else "none (fitted baselines not applicable)"
        acc = m.get("id_accuracy")
        return [("model", str(m.get("model", ""))), ("ID set", f"{sets.get('id_test', {}).get('n', '?')} images"
                 + (f", top-1 accuracy {acc:.1f} %" if acc is not None and np.isfinite(acc) else ", unlabelled")),
                ("OOD sets", ood), ("fitting set", fit),
                ("preprocessing of image folders", f"resize {p.get('resize')}, crop {p.get('crop')}, mean "
                 f"{p.get('mean')}, std {p.get('std')} — from {p.get('from', '')}"),
                ("decision", f"{m['decision']['interval']} bootstrap, {m['decision']['n_boot']:,} resamples, "
                 f"Bonferroni over {m['decision']['cells']} cell(s); equivalence margin 1 AUROC point"),
                ("device", str(m.get("device", ""))), ("ood_lib", str(m.get("versions", {}).get("ood_lib", "")))]

    def worth_it(self) -> pd.DataFrame:
        """Per decided cell (AUROC): the answer — "yes" where GradNorm beats MSP and Energy and the
        pre-registered ‖h‖₁·MSP (one forward pass, no gradient) is worse; "no" where ‖h‖₁·MSP is
        better or equivalent; "not shown" otherwise — with the three verdicts behind it (columns
        named for display: :data:`WORTH_IT_COLUMNS`)."""
        a = self.answer()
        rows = []
        for g in CELLS:
            r = a[a.group == g].set_index("claim").verdict
            if r.empty:
                continue
            msp, energy, pre = r.get("gradnorm_beats_msp"), r.get("gradnorm_beats_energy"), r.get("preregistered_beats_gradnorm")
            word = ("no" if pre in ("better", "equivalent") else
                    "yes" if msp == energy == "better" and pre == "worse" else "not shown")
            rows.append([g, word, msp, energy, pre])
        return pd.DataFrame(rows, columns=WORTH_IT_COLUMNS)

    def numbers(self) -> dict[str, Any]:
        """The numbers a page quotes: model, the answer per cell (``answer``; ``answer_long`` with its
        verdicts), ID images, OOD sets, sets where the mechanism's prediction agrees, τ, GradNorm's
        worst autograd − closed form difference and the images it was checked on."""
        mech, ident = self["mechanism"], self.tables.get("identity")
        w = self.worth_it()
        out = {"model": str(self.meta.get("model", "")), "answer": ", ".join(f"{c} {a}" for c, a in w.iloc[:, :2].to_numpy()),
               "answer_long": "; ".join(self.sentences()), "n_id": int(self.meta["sets"]["id_test"]["n"]),
               "n_sets": len(mech), "mech_agree": int(mech.agrees.fillna(False).astype(bool).sum()),
               "tau": float(mech.tau.iloc[0])}
        if ident is not None:
            out.update(identity_worst=f"{ident.v_diff.max():.1e}", identity_n=int(ident.n.sum()))
        return out

    def sentences(self) -> list[str]:
        """The answer in words, one sentence per decided cell (AUROC)."""
        return [f"{cell}: {word} — GradNorm against MSP {msp}, against Energy {energy}; ‖h‖₁·MSP (no gradient) "
                f"against GradNorm {pre}" for cell, word, msp, energy, pre in self.worth_it().itertuples(index=False)]

    def _sections(self) -> list[tuple[str, pd.DataFrame, str]]:
        mech = self["mechanism"]
        ident = self.tables.get("identity")
        notes = pd.DataFrame(sorted(self.meta.get("notes", {}).items()), columns=["method", "note"])
        return [("Is GradNorm worth it? (AUROC)", self.worth_it().set_index("cell"), "{}"),
                ("AUROC (%) per OOD set and group", self.performance("auroc"), "{:.1f}"),
                ("FPR95 (%) per OOD set and group", self.performance("fpr95"), "{:.1f}"),
                ("The verdicts (AUROC, percentage points)", self.answer(), "{:.2f}"),
                ("The mechanism's prediction: ‖h‖₁ helps where AUROC(‖h‖₁) > τ", mech, "{:.2f}"),
                *([("GradNorm by autograd against ‖h‖₁‖p − u‖₁ (V units)", ident, "{:.1e}")] if ident is not None else []),
                ("Methods not run", notes, "{}")]

    def to_markdown(self) -> str:
        """The report as Markdown (tables as pipe tables; the figures are in the HTML report)."""
        lines = [f"# Is GradNorm worth it on {self.meta.get('model', 'this model')}?", ""]
        lines += [f"- {s}" for s in self.sentences()] + [""]
        lines += [f"- **{k}**: {v}" for k, v in self._setup()] + [""]
        for title, t, fmt in self._sections():
            lines += [f"## {title}", "", _fmt(t, fmt).to_markdown(index=t.index.name is not None or
                                                               not isinstance(t.index, pd.RangeIndex)), ""]
        return "\n".join(lines)

    def to_html(self, path: str | Path | None = None) -> str:
        """The report as one self-contained HTML page (figures inline as PNG; no external file,
        script or font); written to ``path`` when given."""
        title = html.escape(f"Is GradNorm worth it on {self.meta.get('model', 'this model')}?")
        body = [f"<h1>{title}</h1>", "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in self.sentences()) + "</ul>",
                "<table class='setup'>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                                                  for k, v in self._setup()) + "</table>"]
        for name, fig in self.figures().items():
            body.append(f"<figure><img alt='{name}' src='data:image/png;base64,{_png(fig)}'></figure>")
        for title, t, fmt in self._sections():
            body.append(f"<h2>{html.escape(title)}</h2>" + _fmt(t, fmt).to_html(
                index=not isinstance(t.index, pd.RangeIndex), border=0, na_rep="–", escape=True))
        page = f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style>" \
               f"</head><body>{''.join(body)}</body></html>"
        if path is not None:
            atomic_write_bytes(page.encode(), Path(path))
        return page

    def save(self, directory: str | Path) -> Path:
        """The tables as CSV and ``meta.json`` (:meth:`Study.save`), ``report.html`` and ``report.md``."""
        d = self.study.save(directory)
        self.to_html(d / "report.html")
        atomic_write_bytes(self.to_markdown().encode(), d / "report.md")
        return d


CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
       "table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1.5rem;display:block;overflow-x:auto}"
       "th,td{padding:.2rem .5rem;border-bottom:1px solid #ddd;text-align:right}.setup th,.setup td{text-align:left}"
       "img{max-width:100%;height:auto}figure{margin:1rem 0}")


def _interval(r) -> str:
    if not np.isfinite(r["lo"]):
        return f"{r['estimate']:+.2f} points"
    return f"{r['estimate']:+.2f} points, {r['lo']:+.2f} to {r['hi']:+.2f}"


def _fmt(t: pd.DataFrame, fmt: str) -> pd.DataFrame:
    return t.apply(lambda c: c.map(lambda v: fmt.format(v) if isinstance(v, float) and np.isfinite(v)
                                   else ("–" if isinstance(v, float) else v)))


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def verdict_figure(answer: pd.DataFrame):
    """The answering claims' AUROC differences (points) with their simultaneous intervals, one
    row per claim and cell; the shaded band is the equivalence margin (± 1 point)."""
    import matplotlib.pyplot as plt  # imported here: importing ood_lib must not load a plotting backend

    a = answer[np.isfinite(answer.lo.astype(float))].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6.4, 0.3 * max(len(a), 3) + 1.2), dpi=DPI, layout="constrained")
    ax.axvspan(-1, 1, color="0.9", label="equivalence margin (±1 point)")
    ax.axvline(0, color="0.5", lw=0.8)
    colour = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "inconclusive": "0.4"}
    for i, r in a.iterrows():
        ax.plot([r.lo, r.hi], [i, i], color=colour.get(r.verdict, "0.4"), lw=2)
        ax.plot([r.estimate], [i], "o", color=colour.get(r.verdict, "0.4"), ms=4)
    ax.set_yticks(range(len(a)), [f"{get_claim(c).short} · {g}" for c, g in zip(a.claim, a.group)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("AUROC difference (points), with its interval")
    for v in dict.fromkeys(a.verdict):  # one legend entry per verdict shown
        ax.plot([], [], color=colour.get(v, "0.4"), lw=2, label=v)
    fig.legend(loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def study(model, id: Any, ood: Mapping[str, Any], fit: Any = None, *, methods: list[str] | None = None,
          device: str = "auto", size: int | None = None, mean: Any = None, std: Any = None,
          n_boot: int = N_BOOT, identity_images: int = IDENTITY_IMAGES, batch_size: int = 64,
          name: str = "own", model_name: str | None = None, **config: Any) -> OwnStudy:
    """Is GradNorm worth it on ``model``? The study on your model and data, in one call.

    ``model``: any ``nn.Module`` classifier whose output is one ``nn.Linear``'s. ``id``, ``fit``
    and each value of ``ood``: a Dataset, a DataLoader, a tensor of inputs or an image folder;
    an OOD set is far-natural unless given as ``(data, "near")``, ``(data, "far-synthetic")`` or
    ``(data, "covariate")``. ``fit`` (ID training images) lets the fitted baselines run. ``size``,
    ``mean``, ``std`` preprocess image folders (default: the model library's configuration).
    ``model_name`` names the model in the report (default: its library name or class).
    ``config``: :class:`~ood_lib.run.config.RunConfig` fields (``cache_dir``, ``n_id``, ``seed``, …).
    """
    if isinstance(methods, str):
        raise OODInputError(f"methods must be a list of names, got the string {methods!r}")
    prep, source = preprocessing_for(model, size, mean, std)
    bench = own_benchmark(model, id, ood, fit, preprocessing=prep, source=source, name=name, batch_size=batch_size,
                          arch=model_name)
    return OwnStudy(own_study(bench, n_boot=n_boot, identity_images=identity_images, device=device,
                              methods=None if methods is None else tuple(methods), **config))
