"""The fingerprint of an image folder follows the files' content, names and labels: a stale cache
entry can never be served for edited or moved images."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import ood_lib.data.files as D
from ood_lib.data import ImageFiles, file_digest, image_folder
from ood_lib.run.features import extract


class TwoChannels:
    """A gray 4×4 image → (2, 4, 4) float tensor: the input of conftest's TinyNet."""

    def __call__(self, img) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0)
        return torch.stack([x, x * x])

    def __repr__(self) -> str:
        return "TwoChannels()"


@pytest.fixture
def tree(tmp_path):
    """Two class folders of PGM images: files of one image size have one byte size."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8), "L").save(root / c / f"{i}.ppm")
    return root


def dataset(root):
    paths, labels, _ = image_folder(root)
    return ImageFiles(paths, labels, TwoChannels(), (2, 4, 4), mode="L")


def swap(a, b):
    tmp = a.with_name(a.name + ".swap")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)


def test_swapping_same_size_images_between_classes_invalidates_the_cache(tree, tmp_path, tiny_model, record):
    model, cache = tiny_model().float(), tmp_path / "cache"
    before = dataset(tree)
    fp = before.fingerprint()
    first = extract(model, before, cache_dir=cache, progress=False)
    assert extract(model, dataset(tree), cache_dir=cache, progress=False).from_cache  # unchanged: reused
    a, b = tree / "cat" / "0.ppm", tree / "dog" / "1.ppm"
    assert a.stat().st_size == b.stat().st_size
    swap(a, b)
    after = dataset(tree)  # same names, same sizes, same labels: what the old key hashed
    assert [p.name for p in after.paths] == [p.name for p in before.paths]
    assert after.fingerprint() != fp
    again = extract(model, after, cache_dir=cache, progress=False)
    assert not again.from_cache
    ia, ib = after.paths.index(a), after.paths.index(b)
    np.testing.assert_array_equal(again.h[ia], first.h[ib])  # the features follow the content
    np.testing.assert_array_equal(again.labels, first.labels)
    record("fault", "two same-size images swapped between classes", "new fingerprint, features rebuilt")


def test_moving_an_image_to_another_class_changes_the_fingerprint(tree, record):
    fp = dataset(tree).fingerprint()
    shutil.move(tree / "cat" / "2.ppm", tree / "dog" / "2b.ppm")
    moved = dataset(tree)
    assert moved.fingerprint() != fp
    shutil.move(tree / "dog" / "2b.ppm", tree / "cat" / "2.ppm")
    assert dataset(tree).fingerprint() == fp
    record("fault", "an image moved to another class folder", "new fingerprint (path and label are keyed)")


def test_an_edit_of_equal_size_and_mtime_is_seen_by_the_digest_cache(tree, monkeypatch, record):
    """The in-process digest cache keys on (inode, size, mtime, ctime): restoring the mtime after an
    edit cannot hide it, since the edit moved the ctime."""
    monkeypatch.setattr(D, "_RECENT_NS", 0)  # use the cache even for files written just now
    p = tree / "cat" / "1.ppm"
    st = p.stat()
    d0, fp0 = file_digest(p), dataset(tree).fingerprint()
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    with open(p, "r+b") as fh:  # in place: same inode, same size
        fh.write(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_mtime_ns == st.st_mtime_ns and p.stat().st_size == st.st_size
    assert file_digest(p) != d0
    assert dataset(tree).fingerprint() != fp0
    record("fault", "an image edited in place, size and mtime kept", "new digest, new fingerprint")


def test_the_same_tree_elsewhere_has_the_same_fingerprint(tree, tmp_path):
    copy = shutil.copytree(tree, tmp_path / "elsewhere" / "images")
    assert dataset(copy).fingerprint() == dataset(tree).fingerprint()
    other = dataset(tree)
    other.labels = other.labels[::-1].copy()
    assert other.fingerprint() != dataset(tree).fingerprint()


def test_an_unreadable_file_is_fingerprinted_not_fatal(tree):
    ds = dataset(tree)
    fp = ds.fingerprint()
    ds.paths[0].unlink()
    assert file_digest(ds.paths[0]).startswith("unreadable:")
    assert ds.fingerprint() != fp
