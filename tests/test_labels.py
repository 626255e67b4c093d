"""The display names: every id a table or figure can show has a readable, unique name."""

import pandas as pd
import pytest

from ood_lib.data.benchmarks import BENCHMARKS
from ood_lib.run.evaluate import available_methods
from ood_lib.findings.labels import group_label, method_label, model_name, relabel, set_label, short_pair, term_label
from ood_lib.scores.terms import GRID_U, GRID_V, U_TERMS, V_TERMS
from ood_lib.scores import PREREGISTERED


@pytest.mark.parametrize("name, label", [
    ("msp", "MSP"), ("maxlogit", "Max logit"), ("energy", "Energy"), ("odin", "ODIN"),
    ("mahalanobis", "Mahalanobis"), ("react", "ReAct"), ("knn", "KNN"),
    ("gradnorm", "GradNorm"), ("gradnorm_autograd", "GradNorm (autograd)"), ("exgrad", "ExGrad"),
    ("exgrad_flipped", "ExGrad (its authors' orientation)"), ("gradnorm_official_autograd", "GradNorm (all-ones target, autograd)"),
    ("l1*msp", "‖h‖₁ · max p"), ("l1*pu_l1", "‖h‖₁ · ‖p − u‖₁"), ("l1*one", "‖h‖₁"), ("one*msp", "max p"),
    ("linf*maxlogit_gap", "‖h‖∞ · (max f − mean f)"), ("l2sq*unif_l2sq", "‖h‖₂² · (1 − 2/C + ‖p‖₂²)"),
])
def test_method_labels(name, label):
    assert method_label(name) == label


def test_unknown_names_are_shown_as_they_are():
    for name in ["my_detector", "my_detector_flipped", "l9*msp", "l1*", "*msp", ""]:
        assert method_label(name) == name
    assert set_label("my_set") == "my_set" and group_label("mid") == "mid"


def test_every_registered_method_has_a_readable_unique_label():
    """No id reaches the reader, and no two methods of one table share a name."""
    names = list(available_methods())
    labels = {n: method_label(n) for n in names}
    for n, lab in labels.items():
        assert lab != n and "_" not in lab and "*" not in lab, (n, lab)
    assert len(set(labels.values())) == len(names), sorted(labels.values())


def test_grid_member_labels_come_from_the_terms_formulas():
    for u in GRID_U:
        for v in GRID_V:
            if (u, v) == ("one", "one"):
                continue
            label = method_label(f"{u}*{v}")
            for term, name in ((U_TERMS, u), (V_TERMS, v)):
                if name != "one":
                    assert term_label(term[name].label) in label, (u, v, label)
    assert method_label(PREREGISTERED) == "‖h‖₁ · max p"


def test_term_label_drops_the_index():
    assert term_label(V_TERMS["msp"].label) == "max p"
    assert term_label(U_TERMS["linf"].label) == "‖h‖∞"


def test_set_labels_are_the_benchmarks_own_names():
    for b in BENCHMARKS.values():
        for o in b.ood:
            assert set_label(o.key, b.name) == o.name
    assert set_label("textures", "embedded") == "scikit-image textures"
    assert set_label("textures") == "Textures (DTD)"  # the name most benchmarks give the key
    assert set_label("mean") == "mean over OOD sets" and set_label("id_test") == "ID test"
    assert set_label("tiny_imagenet", "embedded") == "Tiny-ImageNet (CIFAR classes removed)"


def test_group_labels():
    assert [group_label(g) for g in ("near", "far", "covariate", "all")] == [
        "near OOD", "far OOD", "covariate shift", "all OOD sets"]
    assert group_label("id") == "in-distribution"


def test_pair_names():
    assert short_pair("cifar10") == "CIFAR-10 · ResNet-20" and model_name("cifar10_densenet") == "DenseNet-BC-100"
    assert short_pair("embedded").startswith("embedded · ")


def test_relabel_replaces_the_id_columns_of_a_copy():
    df = pd.DataFrame({"method": ["gradnorm", "l1*msp"], "ood": ["textures", "noise"],
                       "group": ["far", "far"], "auroc": [90.0, 91.0]})
    out = relabel(df, benchmark="cifar10")
    assert out.method.tolist() == ["GradNorm", "‖h‖₁ · max p"]
    assert out.ood.tolist() == ["Textures (DTD)", "uniform noise"]
    assert out.group.tolist() == ["far OOD", "far OOD"] and out.auroc.tolist() == [90.0, 91.0]
    assert df.method.tolist() == ["gradnorm", "l1*msp"]  # the input is unchanged
