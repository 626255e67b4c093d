"""Each benchmark's loader, on the real data where it exists and on synthetic folders otherwise."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA, needs_shared_data
from ood_lib import OODInputError
from ood_lib.data.benchmarks import BENCHMARKS, get_benchmark
from ood_lib.data import DataNotFoundError, ImageFiles, read_idx


def test_embedded_needs_no_root_and_has_real_data():
    sp = get_benchmark("embedded").splits(None)
    assert len(sp["id_train"].dataset) == 4000 and len(sp["id_test"].dataset) == 1000
    assert set(sp) == {"id_train", "id_test", "sklearn_digits", "font_letters", "textures", "photos", "noise"}
    x, y, ok = sp["id_test"].dataset[0]
    assert x.shape == (1, 28, 28) and 0 <= y <= 9 and ok
    assert sp["sklearn_digits"].dataset[0][1] == -1
    letters = sp["font_letters"].dataset.images
    assert letters.shape == (1500, 28, 28) and letters.max() == 255 and (letters.reshape(1500, -1).std(1) > 10).all()


def test_subsampling_is_seeded():
    b = get_benchmark("embedded")
    a1 = b.splits(None, seed=3, n_ood=50)["textures"].dataset
    a2 = b.splits(None, seed=3, n_ood=50)["textures"].dataset
    a3 = b.splits(None, seed=4, n_ood=50)["textures"].dataset
    assert a1.indices == a2.indices != a3.indices and len(a1) == 50
    assert a1.fingerprint() == a2.fingerprint() != a3.fingerprint()


@needs_shared_data("MNIST", "raw")
def test_mnist_loader_on_real_files():
    sp = get_benchmark("mnist").splits(SHARED_DATA)
    assert len(sp["id_train"].dataset) == 60000 and len(sp["id_test"].dataset) == 10000
    assert len(sp["fashion_mnist"].dataset) == 10000 and len(sp["notmnist"].dataset) == 10000
    assert len(sp["textures"].dataset) == 1200
    x, _, ok = sp["textures"].dataset[0]
    assert x.shape == (1, 28, 28) and ok
    assert {k: s.group for k, s in sp.items()} == {"id_train": "id", "id_test": "id", "fashion_mnist": "near",
                                                   "notmnist": "near", "textures": "far", "noise": "far"}


@needs_shared_data("CIFAR10-JPEG", "test")
def test_cifar10_loader_on_the_jpeg_copy():
    sp = get_benchmark("cifar10").splits(SHARED_DATA)
    assert len(sp["id_test"].dataset) == 10000 and len(sp["id_train"].dataset) == 5000
    ood = [k for k in sp if not k.startswith("id_")]
    assert ood == ["tiny_imagenet", "textures", "mnist", "notmnist", "fashion_mnist", "noise"]
    assert [sp[k].group for k in ood] == ["near"] + ["far"] * 5
    assert "jpeg_quality=None" in repr(sp["id_test"].dataset.transform)  # already JPEG on disk
    for k in ood:  # every OOD image goes through the ID copy's JPEG round trip
        assert "jpeg_quality=75" in repr(sp[k].dataset.transform), k
        x, _, ok = sp[k].dataset[0]
        assert x.shape == (3, 32, 32) and ok, k
    assert len(sp["tiny_imagenet"].dataset) == 1420 and len(sp["mnist"].dataset) == 2000
    d = get_benchmark("cifar10_densenet").splits(SHARED_DATA, n_id=5, n_ood=5)
    assert list(d) == list(sp) and "0.4914" in repr(d["id_test"].dataset.dataset.transform)


@needs_shared_data("ImageNet-val-1300", "labels.csv")
def test_imagenet_lite_split_is_fixed_and_disjoint():
    b = get_benchmark("imagenet_lite")
    sp, again = b.splits(SHARED_DATA), b.splits(SHARED_DATA, seed=5)
    fit, test = sp["id_train"].dataset, sp["id_test"].dataset
    assert len(fit) == 520 and len(test) == 780
    assert not set(fit.paths) & set(test.paths) and fit.paths == again["id_train"].dataset.paths
    # NINCO (near) and the far sets the data root holds (test_imagenet_evidence.py checks them)
    assert [sp[k].group for k in sp if not k.startswith("id_")] == ["near"] + ["far"] * 4
    x, y, ok = test[0]
    assert x.shape == (3, 224, 224) and 0 <= y < 1000 and ok
    assert sp["notmnist"].dataset[0][0].shape == (3, 224, 224)


def test_imagenet_subset_layout_on_synthetic_files(tmp_path):
    folder = tmp_path / "ImageNet-val-1300"
    _write_images(folder / "images", 600, size=40)
    rows = ["file,class_index,wnid"] + [f"{i}.jpg,{i % 7},n{i:08d}" for i in range(600)]
    (folder / "labels.csv").write_text("\n".join(rows))
    (tmp_path / "notMNIST").mkdir()
    with pytest.raises(DataNotFoundError, match="any OOD set"):
        get_benchmark("imagenet_lite").splits(tmp_path)
    _write_images(tmp_path / "DTD-subset" / "banded", 4, size=50)
    sp = get_benchmark("imagenet_lite").splits(tmp_path)
    assert set(sp) == {"id_train", "id_test", "textures", "noise"}
    assert len(sp["id_train"].dataset) == 520 and len(sp["id_test"].dataset) == 80
    (folder / "labels.csv").write_text("name,label\na.jpg,3\n")
    with pytest.raises(OODInputError, match="file,class_index"):
        get_benchmark("imagenet_lite").splits(tmp_path)


def test_a_new_benchmark_is_one_declaration(tmp_path):
    from ood_lib.data import sources as S
    from ood_lib.data.benchmarks import MNIST_PREP, Benchmark, ModelSpec, OODSet

    b = Benchmark("digits_vs_noise", "embedded digits vs noise only", 10, S.embedded_mnist,
                  (OODSet("noise", "uniform noise", "far", S.noise(50)),), ModelSpec("mnist_cnn", train_epochs=1),
                  MNIST_PREP, needs_root=False)
    sp = b.splits(None, n_id=20, n_fit=30)
    assert [(k, len(s.dataset), s.group) for k, s in sp.items()] == [("id_train", 30, "id"), ("id_test", 20, "id"),
                                                                    ("noise", 50, "far")]


@needs_shared_data("CIFAR10-JPEG", "test")
@needs_shared_data("weights", "resnet20-12fca82f.th")
def test_resnet20_accuracy_on_jpeg_cifar10():
    from ood_lib.run.features import extract

    b = get_benchmark("cifar10")
    sp = b.splits(SHARED_DATA, n_id=600, seed=0)
    f = extract(b.load_model(SHARED_DATA), sp["id_test"].dataset, cache_dir=False, progress=False)
    acc = (f.logits.argmax(1) == f.labels).mean()
    assert 0.72 < acc < 0.90, acc  # ~81 % on the JPEG copy (91.8 % on the lossless originals)


def _write_images(folder, n, size=48, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


@pytest.fixture
def synthetic_imagenet(tmp_path):
    for c in ("n01440764", "n01443537"):
        _write_images(tmp_path / "imagenet" / "val" / c, 3)
        _write_images(tmp_path / "imagenet" / "train" / c, 4, seed=1)
    for ood in ("iNaturalist/images", "SUN", "Places", "Textures/bubbly"):
        _write_images(tmp_path / ood, 3, seed=2)
    return tmp_path


def test_imagenet_loader_on_synthetic_folders(synthetic_imagenet):
    sp = get_benchmark("imagenet").splits(synthetic_imagenet)
    assert set(sp) == {"id_train", "id_test", "inaturalist", "sun", "places", "textures"}
    x, y, ok = sp["id_test"].dataset[4]
    assert x.shape == (3, 224, 224) and y == 1 and ok
    sb = get_benchmark("imagenet_bit").splits(synthetic_imagenet)
    assert sb["sun"].dataset[0][0].shape == (3, 480, 480)


def test_imagenet_end_to_end_with_random_weights(synthetic_imagenet, tmp_path):
    from ood_lib.run.evaluate import run_benchmark

    df = run_benchmark("imagenet", data_root=synthetic_imagenet, checkpoint="random", cache_dir=tmp_path / "c",
                       methods=["msp", "gradnorm", "gradnorm_autograd", "l1*msp", "knn", "odin"],
                       progress=False, knn_k=3, batch_size=4)
    assert set(df.ood) == {"inaturalist", "sun", "places", "textures", "far", "mean"}
    assert np.isfinite(df[["auroc", "fpr95", "aupr_in", "aupr_out"]].to_numpy()).all()
    g = df[df.method.isin(["gradnorm", "gradnorm_autograd"])].pivot(index="ood", columns="method", values="auroc")
    assert (g.gradnorm == g.gradnorm_autograd).all()


def test_missing_data_errors_name_path_layout_and_source(tmp_path):
    with pytest.raises(DataNotFoundError, match="(?s)MNIST.*expected layout.*how to get it"):
        get_benchmark("mnist").splits(tmp_path)
    with pytest.raises(DataNotFoundError, match="(?s)CIFAR-10.*cifar-10-batches-py"):
        get_benchmark("cifar10").splits(tmp_path)
    with pytest.raises(DataNotFoundError, match="ImageNet validation"):
        get_benchmark("imagenet").splits(tmp_path)
    with pytest.raises(DataNotFoundError, match="benchmark 'mnist' needs a data root"):
        get_benchmark("mnist").splits(None)
    with pytest.raises(DataNotFoundError, match="resnet20 weights"):
        (tmp_path / "CIFAR10-JPEG").mkdir()
        get_benchmark("cifar10").load_model(tmp_path)


def test_missing_imagenet_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(DataNotFoundError, match="(?s)resnet50 weights.*--checkpoint"):
        get_benchmark("imagenet").load_model(tmp_path)


def test_unknown_benchmark_lists_valid_names():
    with pytest.raises(OODInputError, match="valid: cifar10, cifar10_densenet, embedded, imagenet"):
        get_benchmark("svhn")
    assert {"embedded", "mnist", "cifar10", "imagenet"} <= set(BENCHMARKS)


def test_idx_reader_rejects_corrupt_files(tmp_path):
    p = tmp_path / "x-images-idx3-ubyte"
    p.write_bytes(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x01" * 5)
    with pytest.raises(OODInputError, match="truncated"):
        read_idx(p)
    p.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(OODInputError, match="magic"):
        read_idx(p)


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    from ood_lib.data.transforms import cifar_eval_transform
    from ood_lib.run.features import extract
    from ood_lib.models import CifarResNet

    _write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "imgs" / "notes.png").write_text("hello")
    paths = sorted((tmp_path / "imgs").iterdir())
    ds = ImageFiles(paths, None, cifar_eval_transform(), (3, 32, 32))
    f = extract(CifarResNet().eval(), ds, cache_dir=False, progress=False, batch_size=2)
    assert len(f.h) == 3 and f.n_skipped == 2
    strict = ImageFiles(paths, None, cifar_eval_transform(), (3, 32, 32), on_error="raise")
    with pytest.raises(OODInputError, match="(broken.jpg|notes.png): cannot be read as an image"):
        extract(CifarResNet().eval(), strict, cache_dir=False, progress=False, batch_size=5, num_workers=0)


@pytest.mark.parametrize("size", [(32, 32), (57, 40), (40, 91), (300, 200), (17, 17)])
def test_image_to_input_matches_torchvision(size):
    from torchvision import transforms as T

    from ood_lib.data.transforms import cifar_eval_transform, imagenet_transform, mnist_image_transform
    from ood_lib.data import IMAGENET_MEAN, IMAGENET_STD

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    pairs = [
        (cifar_eval_transform(), T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]), rgb),
        (imagenet_transform("resnet50"), T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]), rgb),
        (imagenet_transform("bit_r101x1"), T.Compose([T.Resize((480, 480)), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]), rgb),
        (imagenet_transform("efficientnet_lite0"), T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor(), T.Normalize((127 / 255,) * 3, (128 / 255,) * 3)]), rgb),
        (mnist_image_transform(), T.Compose([T.Resize(28), T.CenterCrop(28), T.ToTensor(), T.Normalize((0.1307,), (0.3081,))]), rgb.convert("L")),
    ]
    for ours, ref, img in pairs:
        a, b = ours(img), ref(img)
        assert a.shape == b.shape and float((a - b).abs().max()) < 1e-5, (repr(ours), size)


@needs_shared_data("CIFAR10-JPEG", "test")
def test_batched_decoding_equals_the_per_image_path():
    from ood_lib.run.features import batch_loader

    sp = get_benchmark("cifar10").splits(SHARED_DATA, n_id=300, n_ood=60, seed=2)
    for key in ("id_test", "textures"):
        ds = sp[key].dataset
        xb, yb, okb = next(iter(batch_loader(ds, batch_size=len(ds), num_workers=0)))
        xs = torch.stack([ds[i][0] for i in range(len(ds))])
        ys = torch.tensor([ds[i][1] for i in range(len(ds))])
        assert okb.all() and torch.equal(yb, ys)
        assert torch.equal(xb, xs), key  # bit for bit


def test_batched_decoding_skips_the_same_broken_files(tmp_path):
    from ood_lib.data.transforms import cifar_eval_transform
    from ood_lib.run.features import batch_loader

    _write_images(tmp_path / "imgs", 3, size=32)
    for i in range(3):  # 32×32 JPEGs take the batched path
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"sq{i}.jpg")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    paths = sorted((tmp_path / "imgs").iterdir())
    ds = ImageFiles(paths, None, cifar_eval_transform(), (3, 32, 32))
    xb, _, okb = next(iter(batch_loader(ds, batch_size=len(ds), num_workers=0)))
    single = [ds[i] for i in range(len(ds))]
    assert okb.tolist() == [ok for _, _, ok in single] and okb.sum() == 6
    assert torch.equal(xb, torch.stack([x for x, _, _ in single]))


@needs_shared_data("CIFAR10-JPEG", "test")
def test_evaluate_and_verify_take_a_cifar_resnet_of_any_depth(tmp_path):
    import json
    import subprocess
    import sys

    from ood_lib.models import CifarResNet, weights_fingerprint

    torch.manual_seed(0)
    net = CifarResNet(32).eval()  # not the shipped depth: the loader reads it off the checkpoint
    ck = tmp_path / "resnet32.th"
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, ck)
    out = tmp_path / "r.csv"
    common = ["--data-root", str(SHARED_DATA), "--model", "cifar_resnet", "--checkpoint", str(ck)]
    r = subprocess.run([sys.executable, "-m", "ood_lib", "evaluate", "--benchmark", "cifar10", *common, "--n-id", "30",
                        "--n-ood", "10", "--n-fit", "40", "--methods", "msp", "gradnorm", "--quiet",
                        "--cache-dir", str(tmp_path / "c"), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads(out.with_suffix(".csv.json").read_text())
    assert meta["model_fingerprint"] == weights_fingerprint(net)
    v = subprocess.run([sys.executable, "-m", "ood_lib", "verify", "--benchmark", "cifar10", *common, "--n", "2",
                        "--no-loop", "--quiet"], capture_output=True, text=True)
    assert v.returncode == 0 and "cifar_resnet from resnet32.th" in v.stdout, v.stderr[-2000:]


def test_every_far_set_has_the_kind_the_rule_of_7_december_fixes():
    from ood_lib.data.benchmarks import BENCHMARKS, OODSet

    gray = {"mnist", "kmnist", "notmnist", "fashion_mnist"}
    for b in BENCHMARKS.values():
        colour = b.model.arch != "mnist_cnn"
        for o in b.ood:
            synthetic = o.generated or (colour and o.key in gray)
            assert o.kind == ("synthetic" if synthetic else "natural"), (b.name, o.key)
            assert o.decision_group == (f"far-{o.kind}" if o.group == "far" else o.group)
    with pytest.raises(OODInputError, match="kind must be one of natural, synthetic"):
        OODSet("x", "x", "far", None, kind="gray")
