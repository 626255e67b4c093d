"""Confound controls: the correct-ID-only verdicts are the study's rule on a restricted ID set, and a
verdict that flips between variants is found."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from ood_lib import OODInputError
from ood_lib.findings import confounds
from ood_lib.findings.study import Study, run_study

SMALL = dict(n_id=200, n_ood=100, n_fit=300, progress=False, methods=("msp", "energy"))


@pytest.fixture(scope="module")
def study(embedded_model_cache):
    return run_study("embedded", cache_dir=embedded_model_cache, n_boot=50, **SMALL)


def test_with_every_id_image_correct_it_is_the_study_own_verdicts(study):
    same = copy.copy(study)
    same.id_correct = np.ones_like(study.id_correct)
    want = study["verdicts"][study["verdicts"].metric != "identity"].reset_index(drop=True)
    pd.testing.assert_frame_equal(confounds.correct_only(same), want, check_dtype=False)


def test_correct_only_drops_the_misclassified_id_images(study):
    assert 0 < (~study.id_correct).sum() < len(study.id_correct)  # the embedded CNN makes a few mistakes
    v = confounds.correct_only(study)
    a = study["verdicts"][study["verdicts"].metric != "identity"].reset_index(drop=True)
    assert (v[["claim", "group", "metric"]] == a[["claim", "group", "metric"]]).all().all()
    assert (v.cells == a.cells).all() and (v.n_boot == a.n_boot).all()
    assert not np.allclose(v.estimate, a.estimate)  # fewer ID images: other differences
    none = copy.copy(study)
    none.id_correct = np.zeros_like(study.id_correct)
    with pytest.raises(OODInputError, match="classified correctly"):
        confounds.correct_only(none)
    with pytest.raises(OODInputError, match="live study"):
        confounds.correct_only(Study(study.benchmark, study.tables, study.meta, "recorded"))


def test_a_verdict_that_flips_between_variants_is_listed(study):
    v = study["verdicts"]
    flipped = v.copy()
    flipped.loc[flipped.verdict == "better", "verdict"] = "worse"
    t = confounds.confound_table({"as is": (90.0, 200, v), "other": (95.0, 200, flipped)})
    assert set(t.variant) == {"as is", "other"} and "identity" not in set(t.metric)
    dep = confounds.variant_dependent(t)
    better = v[(v.metric == "auroc") & (v.verdict == "better")]
    assert len(dep) == len(better) and (dep["as is"] == "better").all() and (dep["other"] == "worse").all()
    assert confounds.variant_dependent(confounds.confound_table({"as is": (90.0, 200, v)})).empty


def test_adapted_models_are_tested_by_the_mechanism_out_of_sample(tmp_path):
    """An adapted model (confounds.json) enters the out-of-sample test with every one of its pairs,
    even a pair whose base model's was in the sample τ was chosen on; one without factors is refused."""
    import json

    import pytest

    from ood_lib import OODInputError
    from ood_lib.findings.confounds import adapted_units
    from ood_lib.findings.out_of_sample import IN_SAMPLE, hit_rates, out_of_sample_table

    (tmp_path / "cifar10").mkdir()
    factors = [{"ood": "textures", "group": "far-natural", "v_term": "msp", "auroc_u": 80.0, "uv_minus_v": 2.0},
               {"ood": "noise", "group": "far-synthetic", "v_term": "msp", "auroc_u": 40.0, "uv_minus_v": 1.0}]
    (tmp_path / "cifar10" / "confounds.json").write_text(json.dumps({"adaptations": {"fine-tuned": {"factors": factors}}}))
    units = adapted_units(tmp_path, ["cifar10", "mnist"])  # mnist: nothing recorded, nothing added
    assert list(units) == ["cifar10:fine-tuned"] and units["cifar10:fine-tuned"].meta["base"] == "cifar10"
    assert ("cifar10", "textures") in IN_SAMPLE  # the base model's pair was in the sample; the adapted one's is not
    t = out_of_sample_table(units)
    assert len(t) == 2 and not t.in_sample.any() and t.hit.tolist() == [True, False]
    assert hit_rates(t)["hits"] == 1
    (tmp_path / "cifar10" / "confounds.json").write_text(json.dumps({"adaptations": {"AdaBN": {"seed": 0}}}))
    with pytest.raises(OODInputError, match="no factors"):
        adapted_units(tmp_path, ["cifar10"])
