"""The book's figures and tables: drawn at 150 dpi, nothing outside the canvas, display names
instead of ids, axes that say where they start, and the reference lines the text talks about."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ood_lib.book import plots, tables  # noqa: E402
from ood_lib._checks import OODInputError  # noqa: E402


def assert_inside_canvas(fig):
    """Everything drawn (labels, tick labels, legends, axes) lies on the canvas: nothing is cut."""
    fig.canvas.draw()
    drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    w, h = fig.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01, \
        f"drawn area {drawn.bounds} exceeds the {w} × {h} in canvas"


def cost_table(ratios_a, ratios_b):
    paths = ["forward", "closed_form", "gradnorm_published"]
    rows = []
    for setting, ratios in (("CPU", ratios_a), ("GPU, batch 1", ratios_b)):
        for m, scale in (("resnet20", 1.0), ("resnet50", 2.0)):
            for p, r in zip(paths, ratios):
                rows.append({"setting": setting, "model": m, "path": p, "ratio_to_forward": r * scale if r != 1 else 1.0,
                             "ms_per_image": 2.0 * r, "ms_min": 1.8 * r, "ms_max": 2.3 * r})
    return pd.DataFrame(rows)


def test_joint_figure_keeps_the_margins_free_of_labels_and_fits_its_canvas():
    rng = np.random.default_rng(1)
    # less than a decade of U: a log axis then labels its minor ticks too
    u_id, u_ood = np.exp(rng.normal(6, 0.15, 300)), np.exp(rng.normal(5.4, 0.1, 500))
    fig = plots.joint_uv_figure(u_id, rng.gamma(9, 1, 300), u_ood, rng.gamma(3, 1, 500), "Digits",
                                "U = ‖h‖₁", "−log₁₀(1 − max p)", v_log=False)
    assert fig.dpi >= 150
    main, top, side = fig.axes[:3]
    assert main.get_xscale() == "log" and main.get_yscale() == "linear"
    fig.canvas.draw()
    for margin in (top, side):  # the old jointplot printed the log axis' minor labels over the scatter
        labels = margin.get_xticklabels(which="both") + margin.get_yticklabels(which="both")
        assert not [t.get_text() for t in labels if t.get_visible() and t.get_text()]
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend == ["ID test\n(n = 300)", "Digits\n(n = 500)"]
    assert "(log scale)" in main.get_xlabel() and "(log scale)" not in main.get_ylabel()
    assert_inside_canvas(fig)
    plt.close(fig)
    with pytest.raises(OODInputError, match="positive on a log axis"):
        plots.joint_uv_figure(u_id, np.zeros(300), u_ood, np.ones(500), "Digits", "U", "V")
    with pytest.raises(OODInputError, match="same, non-zero length"):
        plots.joint_uv_figure(u_id, np.ones(3), u_ood, np.ones(500), "Digits", "U", "V")


def test_cost_figure_draws_ratios_from_a_line_at_one():
    df = cost_table([1.0, 0.5, 30.0], [1.0, 4.0, 800.0])
    fig = plots.cost_figure(df, panel="setting")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["CPU", "GPU, batch 1"] and fig.dpi >= 150
    for ax, (_, g) in zip(panels, df.groupby("setting", sort=False)):
        assert ax.get_xscale() == "log"  # the ratios span more than a factor 20
        assert any(np.allclose(line.get_xdata(), 1.0) for line in ax.get_lines())  # the 1× line
        bars = [p for p in ax.patches if p.get_height() > 0]
        assert all(np.isclose(min(p.get_x(), p.get_x() + p.get_width()), min(1.0, r)) or np.isclose(p.get_x(), 1.0)
                   for p, r in zip(bars, g.ratio_to_forward))
        ends = sorted(p.get_x() + p.get_width() for p in bars)
        assert np.allclose(ends, sorted(g.ratio_to_forward))
    labels = [t.get_text() for t in panels[0].get_yticklabels()]
    assert labels == [tables.cost_path_label(p) for p in ("forward", "closed_form", "gradnorm_published")]
    assert "1×" in fig.get_supxlabel()
    assert_inside_canvas(fig)
    plt.close(fig)
    fig = plots.cost_figure(cost_table([1.0, 1.5, 3.0], [1.0, 2.0, 4.0]).query("setting == 'CPU'"))
    assert fig.axes[0].get_xscale() == "linear"
    plt.close(fig)
    bad = df.assign(ratio_to_forward=df.ratio_to_forward.where(df.path != "closed_form", 0.0))
    with pytest.raises(OODInputError, match="finite and positive"):
        plots.cost_figure(bad)
    with pytest.raises(OODInputError, match="'ms_per_image'"):
        plots.cost_figure(df.drop(columns=["ms_per_image"]))


def test_simplex_titles_are_formulas_without_indices():
    fig = plots.simplex_figure(["msp", "maxlogit_gap"], resolution=6, ncols=2)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0] == "max p\n(MSP)\n(larger at a vertex)"
    assert titles[1].startswith("max f − mean f\n= T·log(C·max p)") and "_k" not in titles[1]
    assert fig.dpi >= 150
    assert_inside_canvas(fig)
    plt.close(fig)


@pytest.mark.parametrize("value, text", [(0.00123, "0.00123"), (1.0, "1.00"), (1.5432, "1.54"), (12.345, "12.3"),
                                         (99.99, "100"), (7055.06, "7,055"), (1.2e-5, "1.2e-05"), (0.0, "0"),
                                         (float("nan"), "—")])
def test_ratio_text(value, text):
    assert tables.ratio_text(value) == text


def test_book_table_has_the_theme_class_a_caption_and_padding():
    html = tables.book_table(pd.DataFrame({"a": [1.5]}).style, "A caption").to_html()
    assert 'class="dataframe"' in html and "A caption" in html and "padding" in html
    assert "text-align: right" in html
    assert "text-align: right" not in tables.book_table(pd.DataFrame({"a": ["x"]}).style, "c", numbers=False).to_html()


def test_labels_for_paths_models_and_metrics_fall_back_to_the_id():
    assert tables.cost_path_label("exgrad_loop") == "exact ExGrad (loop over C)"
    assert tables.cost_path_label("my_path") == "my_path"
    assert tables.model_label("resnet50") == "ResNet-50" and tables.model_label("vit") == "vit"
    assert tables.metric_label("auroc") == "AUROC (%)" and tables.metric_label("x") == "x"


def test_cost_figure_x_labels_never_collide_across_three_panels():
    # seven decades over three narrow panels: the case whose labels used to run together
    df = pd.concat([cost_table([1.0, 0.002, 30.0], [1.0, 4.0, 5000.0]),
                    cost_table([1.0, 0.5, 30.0], [1.0, 4.0, 800.0])
                    .query("setting == 'CPU'").assign(setting="GPU, batch 256")])
    fig = plots.cost_figure(df, panel="setting")
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3
    boxes = []
    for ax in panels:
        shown = [t for t in ax.get_xticklabels() if t.get_text()
                 and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert 2 <= len(shown) <= 4 and "1×" in [t.get_text() for t in shown]
        assert all(len(t.get_text()) <= 6 for t in shown)  # e.g. "10⁻³×", not "0.001×"
        boxes += [t.get_window_extent() for t in shown]
    boxes.sort(key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:]))  # no two labels touch
    plt.close(fig)
