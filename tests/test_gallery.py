"""The sample-image gallery: seeded samples of every set of a benchmark, shown as the raw images
(the normalisation undone exactly), saved small and read back, and drawn with display names."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from conftest import SHARED_DATA, needs_shared_data  # noqa: E402
from ood_lib import OODInputError  # noqa: E402
from ood_lib.data import embedded as E  # noqa: E402
from ood_lib.data.benchmarks import get_benchmark  # noqa: E402
from ood_lib.data import subsample  # noqa: E402
from ood_lib.book.gallery import (Thumbnails, gallery_figure, load_gallery, sample_images, save_gallery,  # noqa: E402
                             to_uint8)
from ood_lib.findings.labels import set_label  # noqa: E402


@pytest.fixture(scope="module")
def embedded():
    return sample_images("embedded", n=6, seed=3)


def test_every_set_of_the_embedded_benchmark_without_a_data_root(embedded, monkeypatch):
    bench = get_benchmark("embedded")
    assert list(embedded) == ["id_test", *[o.key for o in bench.ood]]
    assert [t.group for t in embedded.values()] == ["id", *[o.group for o in bench.ood]]
    for t in embedded.values():
        assert t.images.dtype == np.uint8 and t.images.shape == (6, 28, 28)
    # the raw images, exactly: the set's own seeded subset with the normalisation undone
    letters = E.embedded_font_letters()
    np.testing.assert_array_equal(embedded["font_letters"].images, letters[subsample(len(letters), 6, 3)])
    monkeypatch.delenv("OOD_DATA_ROOT", raising=False)
    again = sample_images("embedded", n=6, seed=3)
    other = sample_images("embedded", n=6, seed=4)
    assert all((again[k].images == embedded[k].images).all() for k in embedded)
    assert not (other["textures"].images == embedded["textures"].images).all()


def test_to_uint8_undoes_the_normalisation_and_shrinks_large_images():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (2, 3, 8, 12)).astype(np.float32)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    x = (torch.from_numpy(raw) / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    np.testing.assert_array_equal(to_uint8(x, mean, std), raw.transpose(0, 2, 3, 1).astype(np.uint8))
    small = to_uint8(x, mean, std, max_side=6)
    assert small.shape == (2, 4, 6, 3)
    np.testing.assert_allclose(small[0, 0, 0], raw[0, :, :2, :2].mean(axis=(1, 2)), atol=0.51)  # area averaging
    assert to_uint8(x[:, :1], mean[:1], std[:1]).shape == (2, 8, 12)
    with pytest.raises(OODInputError, match="one mean and std per channel"):
        to_uint8(x, (0.5,), (0.5,))


def test_save_and_load_round_trip_small(embedded, tmp_path):
    p = save_gallery(embedded, tmp_path / "rec" / "gallery.npz")
    assert p.name == "gallery.npz" and p.stat().st_size < 60_000
    back = load_gallery(p)
    assert list(back) == list(embedded)
    for k, t in embedded.items():
        assert back[k].group == t.group and (back[k].images == t.images).all()
    with pytest.raises(OODInputError, match="no gallery"):
        load_gallery(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(OODInputError, match="not a gallery"):
        load_gallery(tmp_path / "other.npz")
    with pytest.raises(OODInputError, match="uint8"):
        save_gallery({"x": Thumbnails(np.zeros((2, 4, 4)), "far")}, tmp_path / "bad.npz")
    with pytest.raises(OODInputError, match="positive"):
        sample_images("embedded", n=0)


def test_figure_one_labelled_row_per_set(embedded):
    fig = gallery_figure(embedded, "embedded")
    assert fig.dpi >= 150 and len(fig.axes) == 6 * 6
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert len(labels) == 6 and labels[0].endswith("(in-distribution)")
    for key, label in zip(list(embedded)[1:], labels[1:]):
        assert label.replace("\n", " ").startswith(set_label(key, "embedded"))
    assert labels[2].endswith("(near OOD)") and labels[1].endswith("(covariate shift)")
    assert not [t.get_text() for t in fig.findobj(Text) if "_" in t.get_text()]  # no set ids
    fig.canvas.draw()
    drawn, (w, h) = fig.get_tightbbox(fig.canvas.get_renderer()), fig.get_size_inches()
    assert min(drawn.x0, drawn.y0) >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01
    plt.close(fig)
    with pytest.raises(OODInputError, match="no sets"):
        gallery_figure({})


@needs_shared_data("CIFAR10-JPEG")
def test_cifar10_from_the_data_root():
    from PIL import Image

    s = sample_images("cifar10", SHARED_DATA, n=4, seed=1)
    assert s["id_test"].group == "id" and s["id_test"].images.shape == (4, 32, 32, 3)
    assert set(s) - {"id_test"} <= {o.key for o in get_benchmark("cifar10").ood} and len(s) >= 3
    # the ID thumbnails are the stored images themselves (32 px: no resampling), up to rounding
    test = get_benchmark("cifar10").splits(SHARED_DATA)["id_test"].dataset
    idx = subsample(len(test), 4, 1)
    raw = (np.stack([np.asarray(Image.open(test.paths[i]).convert("RGB")) for i in idx]) if hasattr(test, "paths")
           else test.images[idx])  # JPEG files, or the arrays of the python pickles
    assert np.abs(raw.astype(int) - s["id_test"].images).max() <= 1


def test_samples_or_recorded_reads_recorded_thumbnails_and_says_when_there_are_none(tmp_path):
    from ood_lib.book.gallery import samples_or_recorded

    assert samples_or_recorded("cifar10", None, tmp_path, live=False) is None
    samples = sample_images("embedded", n=2)
    (tmp_path / "cifar10").mkdir()
    save_gallery(samples, tmp_path / "cifar10" / "gallery.npz")
    got = samples_or_recorded("cifar10", None, tmp_path, live=False)
    assert list(got) == list(samples)
    assert list(samples_or_recorded("embedded", None, tmp_path, live=False)) == list(samples)
