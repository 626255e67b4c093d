"""The feature cache: keyed by weights, data and preprocessing; corrupt entries are rebuilt."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ood_lib.data import ArrayImages, ImageFiles
from ood_lib.run.features import cache_key, extract, features_path, forward_batches, read_features, write_features
from ood_lib.models import MnistCNN
from ood_lib.data.transforms import mnist_array_transform, mnist_image_transform


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = MnistCNN().eval()
    imgs = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    ds = ArrayImages(imgs, np.arange(20) % 10, mnist_array_transform())
    return model, ds, imgs, tmp_path


def run(model, ds, cache):
    return extract(model, ds, cache_dir=cache, progress=False, batch_size=8)


def entries(cache: Path):
    return sorted((cache / "features").glob("*.npz"))


def test_second_run_reads_the_cache(setup):
    model, ds, _, cache = setup
    a = run(model, ds, cache)
    b = run(model, ds, cache)
    assert not a.from_cache and b.from_cache and len(entries(cache)) == 1
    np.testing.assert_array_equal(a.h, b.h)
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_any_change_invalidates(setup):
    model, ds, imgs, cache = setup
    k0 = cache_key(model, ds)
    imgs2 = imgs.copy()
    imgs2[0, 0, 0] ^= 1
    assert cache_key(model, ArrayImages(imgs2, ds.labels, ds.transform)) != k0  # data
    m2 = MnistCNN().eval()
    m2.load_state_dict(model.state_dict())
    with torch.no_grad():
        m2.fc2.bias[0] += 1e-6
    assert cache_key(m2, ds) != k0  # weights
    t2 = mnist_array_transform()
    t2.__class__ = type("OtherNorm", (type(t2),), {"__repr__": lambda self: "other"})
    assert cache_key(model, ArrayImages(imgs, ds.labels, t2)) != k0  # preprocessing
    assert cache_key(model, ArrayImages(imgs, ds.labels, mnist_array_transform())) == k0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other_key", "nan"])
def test_damaged_cache_is_detected_and_rebuilt(setup, damage):
    model, ds, _, cache = setup
    good = run(model, ds, cache)
    (path,) = entries(cache)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(500))
    else:
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        if damage == "other_key":
            d["meta"] = np.array(str(d["meta"]).replace(good.key, "0" * 32))
        else:
            d["h"] = d["h"].copy()
            d["h"][0, 0] = np.nan
        with open(path, "wb") as fh:
            np.savez(fh, **d)
    with pytest.warns(UserWarning, match="unusable.*rebuilding"):
        again = run(model, ds, cache)
    assert not again.from_cache
    np.testing.assert_array_equal(again.h, good.h)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run(model, ds, cache).from_cache


def test_no_temporary_files_are_left(setup):
    model, ds, _, cache = setup
    run(model, ds, cache)
    assert [p.name for p in (cache / "features").iterdir() if p.suffix != ".npz"] == []


def test_batches_are_fixed_blocks_so_a_split_run_equals_one_run(setup):
    """Batch k holds items [k·B, (k+1)·B): ranges of whole batches, joined, give the same bytes."""
    model, ds, _, _ = setup
    dev = torch.device("cpu")
    h, f, y, skipped, _ = forward_batches(model, ds, dev, 6, progress=False)
    parts = [forward_batches(model, ds, dev, 6, batches=r, progress=False) for r in (range(0, 1), range(1, 4))]
    assert np.concatenate([p[0] for p in parts]).tobytes() == h.tobytes()
    assert np.concatenate([p[1] for p in parts]).tobytes() == f.tobytes()
    np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), y)
    assert skipped == [] and len(forward_batches(model, ds, dev, 6, batches=range(4, 4), progress=False)[0]) == 0


def test_skipped_images_are_named_and_cached(setup):
    from PIL import Image

    model, _, imgs, cache = setup
    root = cache.parent / "imgs"
    for i in range(7):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[i]).save(root / f"c{i % 2}" / f"{i}.png")
    (root / "c1" / "3.png").write_bytes(b"not an image")
    paths = sorted(root.rglob("*.png"))
    base = ImageFiles(paths, None, mnist_image_transform(), (1, 28, 28), "L")
    ds = torch.utils.data.Subset(base, [6, 5, 4, 1, 0])
    ds.fingerprint = lambda: base.fingerprint() + ":64510"  # as the benchmarks key a subsample
    a = extract(model, ds, cache_dir=cache, progress=False, batch_size=2)
    assert paths[5].name == "3.png"  # c0: 0 2 4 6; c1: 1 3 5
    assert (a.n_skipped, a.skipped, a.skipped_files, len(a.h)) == (1, [1], ["c1/3.png"], 4)
    b = extract(model, ds, cache_dir=cache, progress=False, batch_size=2)
    assert b.from_cache and (b.n_skipped, b.skipped, b.skipped_files) == (1, [1], ["c1/3.png"])


def test_entry_that_counts_but_does_not_name_skipped_images_is_rebuilt(setup):
    model, ds, _, cache = setup
    good = run(model, ds, cache)
    path = features_path(cache, good.key)
    from ood_lib.cache import write_arrays

    write_arrays(path, good.key, {"h": good.h, "logits": good.logits, "labels": good.labels}, n=len(good.h),
                 n_skipped=2)
    with pytest.warns(UserWarning, match="does not say which images were skipped"):
        assert read_features(path, good.key) is None
    write_features(path, good)
    assert read_features(path, good.key).skipped == []
