"""Issue 25: the ImageNet benchmarks with a near group, the ViT and the other Lites, verify on a
transformer, the published anchors, the mechanism out of sample, and the feature-size measurements."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import REPO, SHARED_DATA, needs_shared_data
from ood_lib.data.benchmarks import BENCHMARKS, LITE1_PREP, LITE2_PREP, VIT_PREP, get_benchmark

IMAGENET_SETS = {  # key: (group, kind, decision cell)
    "ninco": ("near", "natural", "near"), "ssb_hard": ("near", "natural", "near"),
    "textures": ("far", "natural", "far-natural"), "inaturalist": ("far", "natural", "far-natural"),
    "openimage_o": ("far", "natural", "far-natural"), "notmnist": ("far", "synthetic", "far-synthetic"),
    "fashion_mnist": ("far", "synthetic", "far-synthetic"), "noise": ("far", "synthetic", "far-synthetic"),
}
NEW = ("imagenet_lite", "imagenet_lite1", "imagenet_lite2", "imagenet_vit")


def _images(folder, n, size=(40, 48), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


@pytest.mark.parametrize("name", NEW)
def test_imagenet_benchmarks_have_a_near_group_and_both_far_cells(name):
    b = get_benchmark(name)
    assert name in BENCHMARKS and b.num_classes == 1000
    assert {o.key: (o.group, o.kind, o.decision_group) for o in b.ood} == IMAGENET_SETS
    arch = {"imagenet_lite": "efficientnet_lite0", "imagenet_lite1": "efficientnet_lite1",
            "imagenet_lite2": "efficientnet_lite2", "imagenet_vit": "vit_tiny_patch16_224"}[name]
    assert b.model.arch == arch


def test_lite_inputs_are_each_models_own_size():
    from ood_lib.models import EFFICIENTNET_LITE

    assert [EFFICIENTNET_LITE[v][2] for v in (0, 1, 2)] == [224, 240, 260]
    assert LITE1_PREP.shape == (3, 240, 240) and LITE2_PREP.shape == (3, 260, 260)


def test_vit_preprocessing_is_timms():
    import timm
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config(model=timm.create_model("vit_tiny_patch16_224", pretrained=False))
    assert cfg["interpolation"] == "bicubic" and cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert VIT_PREP.crop == cfg["input_size"][1] and VIT_PREP.resize == int(224 / cfg["crop_pct"])
    theirs, ours = create_transform(**cfg), VIT_PREP.image()
    rng = np.random.default_rng(0)
    for w, h in ((227, 227), (128, 171), (300, 200)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert torch.equal(theirs(img), ours(img)), (w, h)


def test_presize_brings_photographs_to_the_subsets_size():
    from ood_lib.data.transforms import presize_like_subset

    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 171, 3), dtype=np.uint8))
    assert presize_like_subset(img, (227, 227)).size == (227, 227)
    same = Image.new("RGB", (227, 227), (10, 20, 30))
    assert presize_like_subset(same, (227, 227)) is same
    flat = presize_like_subset(Image.new("RGB", (100, 60), (10, 20, 30)), (227, 227))
    assert (np.asarray(flat) == (10, 20, 30)).all()  # bilinear keeps a constant image constant


def test_subset_layout_with_every_near_and_far_folder(tmp_path):
    """The ImageNet subset beside stand-ins of NINCO (a class folder with spaces), SSB-hard,
    OpenImage-O, iNaturalist and Textures, in OpenOOD's and the usual layouts."""
    folder = tmp_path / "ImageNet-val-1300"
    _images(folder / "images", 600, size=(16, 16))
    (folder / "labels.csv").write_text("\n".join(["file,class_index,wnid"] + [f"{i}.jpg,{i % 5},x" for i in range(600)]))
    _images(tmp_path / "NINCO" / "NINCO_OOD_classes" / "Caracal caracal caracal", 3)
    _images(tmp_path / "NINCO" / "NINCO_OOD_unit_tests" / "noise", 2)  # not OOD classes: never read
    _images(tmp_path / "images_largescale" / "ssb_hard" / "n00000001", 4)
    _images(tmp_path / "OpenImage-O", 5)
    _images(tmp_path / "iNaturalist" / "images", 6)
    _images(tmp_path / "dtd" / "images" / "bubbly", 7)
    sp = get_benchmark("imagenet_vit").splits(tmp_path)
    assert len(sp["id_train"].dataset) == 520 and len(sp["id_test"].dataset) == 80  # the fixed 520 fit
    got = {k: (len(s.dataset), s.group) for k, s in sp.items() if not k.startswith("id_")}
    assert got == {"ninco": (3, "near"), "ssb_hard": (4, "near"), "openimage_o": (5, "far"),
                   "inaturalist": (6, "far"), "textures": (7, "far"), "noise": (500, "far")}
    for k in ("ninco", "textures"):
        t = sp[k].dataset.transform
        assert t.presize == (227, 227) and t.interpolation == "bicubic", k
        x, _, ok = sp[k].dataset[0]
        assert ok and x.shape == (3, 224, 224)
    assert get_benchmark("imagenet_lite").splits(tmp_path)["ninco"].dataset[0][0].shape == (3, 224, 224)


def test_full_validation_set_is_used_when_the_root_holds_it(tmp_path):
    from ood_lib.data.sources import imagenet_classes

    wnids = imagenet_classes()[:3]
    for c in wnids:
        _images(tmp_path / "imagenet" / "val" / c, 10)
    _images(tmp_path / "NINCO-subset" / "bagpipe", 2)
    b = get_benchmark("imagenet_lite2")
    sp, again = b.splits(tmp_path), b.splits(tmp_path, seed=3)
    fit, test = sp["id_train"].dataset, sp["id_test"].dataset
    assert (len(fit), len(test)) == (12, 18) and not set(fit.paths) & set(test.paths)
    assert fit.paths == again["id_train"].dataset.paths  # the split does not move with the run's seed
    assert set(np.unique(test.labels)) <= {0, 1, 2}
    assert sp["ninco"].dataset.transform.presize is None  # full-size ID images: no pre-scaling
    assert sp["ninco"].dataset[0][0].shape == (3, 260, 260)
    _images(tmp_path / "imagenet" / "train" / wnids[0], 4)
    sp = b.splits(tmp_path)
    assert len(sp["id_train"].dataset) == 4 and len(sp["id_test"].dataset) == 30


@needs_shared_data("NINCO-subset")
def test_ninco_subset_loads():
    sp = get_benchmark("imagenet_vit").splits(SHARED_DATA)
    assert len(sp["ninco"].dataset) == 763 and sp["ninco"].group == "near"
    assert any(" " in p.parent.name for p in sp["ninco"].dataset.paths)
    x, _, ok = sp["ninco"].dataset[0]
    assert ok and x.shape == (3, 224, 224)


@needs_shared_data("weights", "vit_tiny_patch16_224.pth")
def test_vit_loads_strictly_with_its_head():
    b = get_benchmark("imagenet_vit")
    m = b.load_model(SHARED_DATA)
    assert m.head.weight.shape == (1000, 192) and sum(p.numel() for p in m.parameters()) == 5717416
    with torch.no_grad():
        h, f = m.forward_features(torch.zeros(2, 3, 224, 224))
    assert h.shape == (2, 192) and torch.allclose(f, m.head(h))


@pytest.mark.parametrize("variant", [1, 2])
def test_lite_package_weights_load_strictly(variant):
    from ood_lib.models import resolve_model

    m = resolve_model(f"efficientnet_lite{variant}", None)
    assert m.head.weight.shape == (1000, 1280) and m.net.default_cfg["architecture"] == f"tf_efficientnet_lite{variant}"


def _tiny_vit(num_classes):
    import timm
    from ood_lib.models import wrap_model

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes, img_size=32, depth=2)
    return wrap_model(net.eval())


@pytest.mark.parametrize("classes", [10, 150])
def test_verify_on_a_transformer_is_exact_at_the_head_and_says_what_it_skips(classes):
    from ood_lib.gradients.verify import verify
    from ood_lib.models.anatomy import has_attention

    model = _tiny_vit(classes)
    assert has_attention(model)
    x = torch.randn(4, 3, 32, 32)
    t = verify(model, x, loop=False)
    last = t[t.wrt.isin(["W", "W,b"])]
    assert (last.v_diff_vmap <= 1e-10).all() and (last.spread <= 1e-10).all()
    c_pass = last[last.score.isin(["exgrad", "fisher", "unif_l1", "unif_l2sq", "mean_grad"])]
    assert (c_pass.note == ("" if classes <= 100 else f"C = {classes} backward passes per image: on the first 1 of 4 images")).all()
    deep = t[~t.wrt.isin(["W", "W,b"])]
    assert set(deep.wrt) == {"net", "input"}
    assert deep.v_diff_vmap.isna().all() and deep.spread.isna().all() and deep.rel_diff_loop.notna().all()
    assert deep.note.str.contains("first 2 of 4 images").all()


@needs_shared_data("weights", "vit_tiny_patch16_224.pth")
@needs_shared_data("ImageNet-val-1300", "labels.csv")
def test_verify_command_on_the_vit():
    r = subprocess.run([sys.executable, "-m", "ood_lib", "verify", "--benchmark", "imagenet_vit", "--data-root",
                        str(SHARED_DATA), "--n", "4", "--no-loop", "--quiet"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "scaled_dot_product_attention" in r.stdout and "worst difference in V units nan" not in r.stdout
    worst = float(r.stdout.split("worst difference in V units ")[1].split()[0])
    assert worst <= 1e-10


def test_imagenet_anchors():
    from ood_lib.findings.reference import imagenet_anchors

    t = imagenet_anchors()
    assert {"source", "model", "setting", "group", "method", "auroc", "fpr95", "gradnorm_minus_msp"} <= set(t.columns)
    r50 = t[(t.model == "ResNet-50") & (t.method == "gradnorm")].set_index("setting")
    assert r50.auroc.to_dict() == {"near": 72.96, "far": 90.25}
    assert r50.gradnorm_minus_msp.round(2).to_dict() == {"near": -3.06, "far": 5.02}  # the direction flips
    vit = t[t.model == "ViT-B/16"]
    assert list(vit.auroc) == [39.28, 41.75] and vit.gradnorm_minus_msp.isna().all()
    bit = t[(t.model == "BiT-S-R101x1") & (t.setting == "mean") & (t.method == "gradnorm")]
    assert bit.gradnorm_minus_msp.round(4).tolist() == [7.0275]


class _Study:
    def __init__(self, benchmark, factors):
        self.benchmark, self.tables = benchmark, {"factors": factors}

    def __getitem__(self, k):
        return self.tables[k]


def test_mechanism_out_of_sample_by_hand():
    from ood_lib.findings.out_of_sample import IN_SAMPLE, hit_rates, out_of_sample_table

    assert len(IN_SAMPLE) == 20
    f = pd.DataFrame({"ood": ["textures", "ninco", "textures", "noise"], "group": ["far", "near", "far", "far"],
                      "auroc_u": [54.3, 80.0, 50.0, 90.0], "uv_minus_v": [-0.9, 1.0, 0.0, -2.0],
                      "v_term": ["msp", "msp", "msp", "msp"]})
    t = out_of_sample_table([_Study("imagenet_lite", f.iloc[:2]), _Study("imagenet_vit", f.iloc[2:])])
    assert list(zip(t.benchmark, t.ood)) == [("imagenet_lite", "ninco"), ("imagenet_vit", "textures"),
                                             ("imagenet_vit", "noise")]  # Lite0 × Textures is one of the 20
    assert t.model.tolist() == ["efficientnet_lite0", "vit_tiny_patch16_224", "vit_tiny_patch16_224"]
    assert t.predicted_helps.tolist() == [True, False, True] and t.helps.tolist() == [True, False, False]
    r = hit_rates(t)
    assert (r["n"], r["hits"], r["majority"]) == (3, 2, "does not help")
    assert r["hit_rate"] == pytest.approx(2 / 3) and r["base_rate"] == pytest.approx(2 / 3)
    assert r["always_helps_rate"] == pytest.approx(1 / 3) and not r["beats_base_rate"]
    both = out_of_sample_table({"imagenet_lite": _Study("x", f.iloc[:2])}, include_in_sample=True)
    assert both.in_sample.tolist() == [True, False] and hit_rates(both)["n"] == 1
    assert np.isnan(hit_rates(t.iloc[:0])["hit_rate"])


def test_in_sample_pairs_are_the_recorded_ones():
    from ood_lib.findings.out_of_sample import IN_SAMPLE

    rec = set()
    for b in ("mnist", "cifar10", "cifar10_densenet", "imagenet_lite"):
        f = pd.read_csv(REPO / "results" / "recorded" / b / "factors.csv")
        rec |= {(b, o) for o in f[f.v_term == "msp"].ood}
    assert IN_SAMPLE <= rec


def test_feature_norm_spread_and_relu6_clipping_by_hand():
    from ood_lib.findings.feature_size import feature_norm_spread, relu6_clipping

    s = feature_norm_spread({"id": [1.0, 3.0], "ood": [2.0, 2.0, 2.0]}).set_index("set")
    assert s.loc["id", "mean"] == 2.0 and s.loc["id", "sd"] == pytest.approx(np.sqrt(2)) and s.loc["ood", "cv"] == 0
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    net = nn.Sequential(conv, nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    x = torch.tensor([[[[8.0, 2.0], [-4.0, 2.0]]]])  # channel 0: 8, 2, −4, 2; channel 1: −8, −2, 4, −2
    r = relu6_clipping(net, x).iloc[0]
    assert r.l1_before == pytest.approx(2.0 + 2.0)  # |mean a| per channel: 2 and 2
    assert r.l1_uncapped == pytest.approx(12 / 4 + 4 / 4) and r.l1_after == pytest.approx(10 / 4 + 4 / 4)
    assert r.frac_capped == pytest.approx(1 / 8) and r.frac_zeroed == pytest.approx(4 / 8)
    assert r.frac_units_capped == 0.0
