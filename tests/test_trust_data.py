"""Nothing read from disk is trusted: class folders are checked against the benchmark, unreadable
images are said out loud (and stop a run past ``max_skipped``), 16-bit images are scaled rather than
clipped, and every broken data file is named in its error.

Every case adds a row ("bad data") to the reliability matrix printed at the end of the test run.
"""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ood_lib import OODInputError
from ood_lib.data import sources as S
from ood_lib.data.benchmarks import LITE0_PREP, RESNET20_PREP, get_benchmark
from ood_lib.data import ImageFiles, read_idx
from ood_lib.run.evaluate import run_benchmark

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # label order
RUN = dict(checkpoint="random", methods=["msp"], n_ood=10, progress=False)


def _jpegs(folder, n, seed=0, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


@pytest.fixture
def cifar_root(tmp_path):
    """A data root laid out like the CIFAR-10 JPEG copy (2 images per class) with a Textures folder."""
    root = tmp_path / "data"
    for part in ("train", "test"):
        for i, c in enumerate(CLASSES):
            _jpegs(root / "CIFAR10-JPEG" / part / c, 2, seed=i)
    _jpegs(root / "DTD-subset" / "banded", 4, seed=99, size=48)
    return root


def _test_split(root):
    return get_benchmark("cifar10").splits(root)["id_test"].dataset


def _said(err, tmp_path) -> str:
    """The first line of an error, as a row of the matrix: the test's own folder shortened to '…'."""
    return f"{type(err.value).__name__}: {str(err.value).splitlines()[0].replace(str(tmp_path), '…')[:70]}"


def _label_of_folder(ds):
    return [CLASSES.index(p.parent.name) for p in ds.paths]


# --- class folders -----------------------------------------------------------------------------
def test_hidden_folders_and_files_are_not_data(cifar_root, record):
    test = cifar_root / "CIFAR10-JPEG" / "test"
    (test / ".ipynb_checkpoints").mkdir()  # what Jupyter leaves: sorted first, it shifted every label
    (test / "cat" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork, not an image
    (test / ".DS_Store").write_bytes(b"\x00")
    ds = _test_split(cifar_root)
    assert len(ds) == 20 and all(not p.name.startswith(".") for p in ds.paths)
    assert ds.labels.tolist() == _label_of_folder(ds) == sorted(_label_of_folder(ds))
    record("bad data", "empty .ipynb_checkpoints/ among CIFAR-10 classes", "ignored, with ._* and .DS_Store; labels unchanged")


@pytest.mark.parametrize("change,match", [
    ("missing", r"CIFAR-10 JPEG test: the class folders under .*test are not the benchmark's 10 classes: missing truck"),
    ("eleventh", r"class folders under .*test .*unexpected unicorn"),
    ("link to .", r"test/loop is a symbolic link to a folder, which is not followed"),
    ("empty class", r"CIFAR-10 JPEG test: class folders without images under .*test: ship"),
], ids=["missing class folder", "eleventh class folder", "folder link to '.'", "class folder without images"])
def test_class_folders_must_be_the_benchmarks(cifar_root, tmp_path, change, match, record, request):
    test = cifar_root / "CIFAR10-JPEG" / "test"
    if change == "missing":
        for f in (test / "truck").iterdir():
            f.unlink()
        (test / "truck").rmdir()
    elif change == "eleventh":
        _jpegs(test / "unicorn", 2)
    elif change == "link to .":
        os.symlink(".", test / "loop")
    else:
        for f in (test / "ship").iterdir():
            f.unlink()
    with pytest.raises(OODInputError, match=match) as err:
        _test_split(cifar_root)
    record("bad data", f"CIFAR-10 JPEG: {request.node.callspec.id}", _said(err, tmp_path))


def test_links_inside_an_ood_folder_are_not_followed(cifar_root, tmp_path, record):
    os.symlink("..", cifar_root / "DTD-subset" / "banded" / "up")
    with pytest.raises(OODInputError, match="DTD-subset/banded/up is a symbolic link to a folder") as err:
        get_benchmark("cifar10").splits(cifar_root)
    record("bad data", "OOD folder holds a link to its parent", _said(err, tmp_path))


def test_imagenet_folders_are_labelled_by_the_class_index(tmp_path, record):
    val = tmp_path / "imagenet" / "val"
    _jpegs(val / "n01443537", 2)  # goldfish: class 1 of ImageNet-1k, whatever else is present
    _jpegs(val / "n15075141", 1)  # toilet tissue: class 999
    idd = S.imagenet_folders(S.Context(tmp_path, LITE0_PREP))
    assert idd.test.labels.tolist() == [1, 1, 999]
    _jpegs(val / "misc", 1)
    with pytest.raises(OODInputError, match=r"ImageNet validation: .*not the benchmark's 1000 classes: unexpected misc"):
        S.imagenet_folders(S.Context(tmp_path, LITE0_PREP))
    record("bad data", "ImageNet folders: subset of classes, one unknown", "labels from the class index; 'misc' named")


# --- unreadable images: said out loud, limited --------------------------------------------------
def _corrupt(root, n):
    files = sorted((root / "CIFAR10-JPEG" / "test").rglob("*.jpg"))[:n]
    for f in files:
        f.write_bytes(b"\xff\xd8 not a jpeg")
    return files


def test_half_the_id_test_set_unreadable_stops_the_run(cifar_root, tmp_path, record):
    _corrupt(cifar_root, 10)
    with pytest.raises(OODInputError, match=r"cifar10/id_test: 10 of 20 images \(50.0%\) could not be read: "
                                            r".*/CIFAR10-JPEG/test/airplane/0.jpg.*more than max_skipped = 0.01") as err:
        run_benchmark("cifar10", data_root=cifar_root, cache_dir=tmp_path / "c", **RUN)
    record("bad data", "half the ID test images corrupt", _said(err, tmp_path))


def test_skipped_files_are_printed_and_written(cifar_root, tmp_path, capfd, record):
    _corrupt(cifar_root, 1)
    out = tmp_path / "r.csv"
    df = run_benchmark("cifar10", data_root=cifar_root, cache_dir=tmp_path / "c", out=out, max_skipped=0.1, **RUN)
    err = capfd.readouterr().err
    assert err.count("could not be read") == 1
    assert "cifar10/id_test: 1 of 20 images (5.0%) could not be read: " in err and "test/airplane/0.jpg" in err
    meta = json.loads(out.with_suffix(".csv.json").read_text())
    sets = meta["sets"]
    assert sets["id_test"]["skipped_files"] == ["CIFAR10-JPEG/test/airplane/0.jpg"] and sets["id_test"]["n_skipped"] == 1
    assert sets["textures"]["skipped_files"] == [] and meta["config"]["max_skipped"] == 0.1
    assert df.attrs["meta"]["sets"]["id_test"]["skipped_files"] == sets["id_test"]["skipped_files"]
    again = run_benchmark("cifar10", data_root=cifar_root, cache_dir=tmp_path / "c", max_skipped=0.1, **RUN)
    assert "could not be read" in capfd.readouterr().err  # from the cache too
    assert again.attrs["meta"]["sets"]["id_test"]["skipped_files"] == sets["id_test"]["skipped_files"]
    with pytest.raises(OODInputError, match="1 of 20 images"):  # the default limit, 1 %, on the cached entry
        run_benchmark("cifar10", data_root=cifar_root, cache_dir=tmp_path / "c", **RUN)
    record("bad data", "1 of 20 ID test images corrupt, max_skipped 0.1", "stderr line; skipped_files in the .json")


def test_the_verify_subset_says_which_images_it_left_out(cifar_root, capfd, record):
    from ood_lib.data import stack_images

    _corrupt(cifar_root, 2)
    x, y = stack_images(_test_split(cifar_root))
    err = capfd.readouterr().err
    assert len(x) == len(y) == 18
    assert "2 of 20 images could not be read and were left out: " in err and "test/airplane/0.jpg" in err
    record("bad data", "unreadable images in verify's subset", "stderr line naming them; the rest is used")


def test_cli_stops_on_unreadable_images_without_a_traceback(cifar_root, tmp_path, record):
    _corrupt(cifar_root, 10)
    args = ["evaluate", "--benchmark", "cifar10", "--data-root", str(cifar_root), "--checkpoint", "random",
            "--methods", "msp", "--n-ood", "10", "--quiet", "--cache-dir", str(tmp_path / "c")]
    r = subprocess.run([sys.executable, "-m", "ood_lib", *args], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "error: cifar10/id_test: 10 of 20 images" in r.stderr and "--max-skipped" in r.stderr
    ok = subprocess.run([sys.executable, "-m", "ood_lib", *args, "--max-skipped", "0.5"], capture_output=True, text=True)
    assert ok.returncode == 0 and "cifar10/id_test: 10 of 20 images" in ok.stderr, ok.stderr[-2000:]
    record("bad data", "CLI: half the ID test images corrupt", "exit 2: " + r.stderr.strip().splitlines()[0][:70])


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "1%"])
def test_max_skipped_must_be_a_fraction(value, tmp_path, record):
    with pytest.raises(OODInputError, match="max_skipped must be a fraction in"):
        run_benchmark("embedded", cache_dir=tmp_path, max_skipped=value, n_id=20, n_ood=20, methods=["msp"], progress=False)
    record("bad data", f"max_skipped = {value!r}", "OODInputError: max_skipped must be a fraction in [0, 1]")


# --- 16-bit and other image modes ----------------------------------------------------------------
def _as_array(img):
    return torch.from_numpy(np.asarray(img).copy())


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_16_bit_png_is_scaled_not_clipped(tmp_path, mode, record):
    v = np.arange(0, 65536, 257 * 17, dtype=np.uint16).reshape(4, 4)  # 0 … 65535 in 16 steps
    path = tmp_path / "deep.png"
    Image.fromarray(v).save(path)  # a 16-bit gray PNG
    assert Image.open(path).mode in ("I;16", "I")
    ds = ImageFiles([path], None, _as_array, (4, 4) if mode == "L" else (4, 4, 3), mode, on_error="raise")
    x, _, ok = ds[0]
    want = (v // 257).astype(np.uint8)
    assert ok and np.array_equal(x.numpy(), want if mode == "L" else np.repeat(want[..., None], 3, -1))
    xb, _, okb = ds.load_batch([0])
    assert okb.all() and torch.equal(xb[0], x)
    record("bad data", f"16-bit gray PNG read as {mode}", "scaled by 1/257 (0 … 65535 → 0 … 255), not clipped")


def test_float_image_is_refused_by_name(tmp_path, record):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), "F").save(path)
    ds = ImageFiles([path], None, _as_array, (4, 4, 3), "RGB", on_error="raise")
    with pytest.raises(OODInputError, match=r"depth.tif: cannot be read as an image .*floating-point.*no fixed range") as err:
        ds[0]
    assert not ImageFiles([path], None, _as_array, (4, 4, 3), "RGB")[0][2]  # skipped (and counted) by default
    record("bad data", "floating-point TIFF", "OODInputError: …/depth.tif: … (PIL mode 'F') has no fixed range …")


# --- broken data files: every error names the file ------------------------------------------------
def _idx(n):
    return b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + b"\x07" * (n * 784)


def _write_table(tmp_path, rows):
    folder = tmp_path / "ImageNet-val-1300"
    _jpegs(folder / "images", 3)
    (folder / "labels.csv").write_text("\n".join(["file,class_index,wnid", *rows]) + "\n")
    return folder / "labels.csv"


def _subset(tmp_path, table):
    return S.imagenet_val_subset(S.Context(tmp_path, LITE0_PREP))


def _svhn(tmp_path, content):
    f = tmp_path / "svhn" / "test_32x32.mat"
    f.parent.mkdir()
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        from scipy.io import savemat

        savemat(f, content)
    return lambda: S.svhn(S.Context(tmp_path, RESNET20_PREP))


def _cifar_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]:
        (folder / name).write_bytes(b"not a pickle")
    return S.cifar10(S.Context(tmp_path, RESNET20_PREP))


def _gz(tmp_path, data):
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(data)
    return p


BAD_FILES = {
    "IDX file of 0 images": (lambda t: (t / "x-idx3-ubyte").write_bytes(_idx(0)) and read_idx(t / "x-idx3-ubyte"),
                             r"x-idx3-ubyte: an IDX file of 0 items"),
    "IDX header cut short": (lambda t: (t / "x-idx3-ubyte").write_bytes(_idx(1)[:9]) and read_idx(t / "x-idx3-ubyte"),
                             r"x-idx3-ubyte: truncated or corrupt IDX header"),
    "gzip not gzip": (lambda t: read_idx(_gz(t, b"\x1f\x8b\x00garbage")),
                      r"t10k-images-idx3-ubyte.gz: cannot be read or decompressed"),
    "gzip truncated": (lambda t: read_idx(_gz(t, gzip.compress(_idx(3))[:-12])),
                       r"t10k-images-idx3-ubyte.gz: cannot be read or decompressed"),
    "SVHN .mat corrupt": (lambda t: _svhn(t, b"MATLAB 5.0 MAT-file, not really" + b"\x00" * 200)(),
                          r"svhn/test_32x32.mat: cannot be read as a MATLAB file"),
    "SVHN .mat without X": (lambda t: _svhn(t, {"Y": np.zeros(3)})(),
                            r"svhn/test_32x32.mat: expected SVHN's X, .* got no variable X"),
    "SVHN .mat of 16-bit X": (lambda t: _svhn(t, {"X": np.zeros((32, 32, 3, 2), np.uint16)})(),
                              r"svhn/test_32x32.mat: expected SVHN's X.*type uint16"),
    "CIFAR-10 batches corrupt": (_cifar_batches, r"cifar-10-batches-py: the CIFAR-10 batches cannot be read"),
    "labels.csv: class_index 'cat'": (lambda t: _subset(t, _write_table(t, ["0.jpg,3,n1", "1.jpg,cat,n2"])),
                                      r"labels.csv, line 3: class_index 'cat' is not an integer in 0..999"),
    "labels.csv: class_index 1000": (lambda t: _subset(t, _write_table(t, ["0.jpg,1000,n1"])),
                                     r"labels.csv, line 2: class_index '1000' is not an integer"),
    "labels.csv: absolute path": (lambda t: _subset(t, _write_table(t, ["/etc/hostname.jpg,3,n1"])),
                                  r"labels.csv, line 2: file '/etc/hostname.jpg' is not a path inside the images folder"),
    "labels.csv: '../' path": (lambda t: _subset(t, _write_table(t, ["0.jpg,1,n1", "../../x.jpg,3,n1"])),
                               r"labels.csv, line 3: file '../../x.jpg' is not a path inside"),
    "labels.csv: a row repeated": (lambda t: _subset(t, _write_table(t, ["0.jpg,1,n1", "1.jpg,2,n2", "0.jpg,1,n1"])),
                                   r"labels.csv, line 4: file '0.jpg' is listed twice \(first on line 2\)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_broken_data_files_are_named(case, tmp_path, record):
    call, match = BAD_FILES[case]
    with pytest.raises(OODInputError, match=match) as err:
        call(tmp_path)
    assert str(tmp_path) in str(err.value)  # the full path of the file
    record("bad data", case, _said(err, tmp_path))


def test_a_clean_labels_csv_still_loads(tmp_path):
    _write_table(tmp_path, [f"{i}.jpg,{7 * i},n{i}" for i in range(3)])
    files, labels = S.label_table(tmp_path / "ImageNet-val-1300" / "labels.csv")
    assert files == ["0.jpg", "1.jpg", "2.jpg"] and labels.tolist() == [0, 7, 14]
