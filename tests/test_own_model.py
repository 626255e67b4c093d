"""The study on your own model and data (issue 27): the architecture read off a checkpoint, the one
call ``ood_lib.study``, the command line with ``--id``/``--ood``/``--fit``, the one-page report, the
template chapter, and what bad input gets. Random-weight models and tiny image folders written to
``tmp_path``: these tests check the plumbing, not any number."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ood_lib
from ood_lib import OODInputError
from ood_lib.cli import main
from ood_lib.models import CifarResNet, DenseNetBC, MnistCNN, architecture_of, model_from_checkpoint, read_state_dict

from conftest import REPO

FEW = ["msp", "energy", "gradnorm", "knn"]  # the study adds what its claims and tables compare


def images(root: Path, n: int, size: int = 32, classes: list[str] | None = None, seed: int = 0,
           smooth: bool = False) -> Path:
    """``n`` PNG images under ``root`` (spread over ``classes`` sub-folders where given)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / classes[i % len(classes)] if classes else root
        d.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(a // 4 + 96 if smooth else a).save(d / f"im{i}.png")
    return root


@pytest.fixture
def folders(tmp_path):
    """ID (3 classes), fitting set, two OOD sets."""
    c = ["a", "b", "c"]
    return {"id": images(tmp_path / "id", 12, classes=c), "fit": images(tmp_path / "fit", 18, classes=c, seed=1),
            "smooth": images(tmp_path / "smooth", 8, seed=2, smooth=True), "noise": images(tmp_path / "noise", 8, seed=3)}


def features_written(cache: Path) -> list[Path]:
    return sorted((cache / "features").glob("*.npz")) if (cache / "features").is_dir() else []


# --- the architecture read off the checkpoint --------------------------------------------------
@pytest.mark.parametrize("wrap", ["bare", "module", "state_dict", "model+module", "net+model"])
def test_a_cifar_resnet_of_any_depth_is_read_off_its_checkpoint(tmp_path, wrap):
    torch.manual_seed(0)
    net = CifarResNet(32, 7)
    s = net.state_dict()
    ck = {"bare": s, "module": {f"module.{k}": v for k, v in s.items()}, "state_dict": {"epoch": 3, "state_dict": s},
          "model+module": {"model": {f"module.{k}": v for k, v in s.items()}},
          "net+model": {"net": {f"model.{k}": v for k, v in s.items()}}}[wrap]
    torch.save(ck, tmp_path / "r32.th")
    m = model_from_checkpoint(tmp_path / "r32.th")
    assert isinstance(m, CifarResNet) and m.depth == 32 and m.head.out_features == 7
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), s.values()))


def test_densenet_and_registered_models_are_read_off_their_checkpoints():
    name, m = architecture_of(DenseNetBC(22, 6, 0.5, 4).state_dict())
    assert (name, m.depth, m.growth, m.head.out_features) == ("densenet_bc", 22, 6, 4)
    name, m = architecture_of(MnistCNN(3).state_dict())
    assert name == "mnist_cnn" and m.head.out_features == 3


def test_an_unknown_architecture_names_the_closest_and_the_flag(tmp_path):
    s = {k: v for k, v in CifarResNet(20).state_dict().items() if not k.startswith("layer3")}
    torch.save(s, tmp_path / "odd.th")
    with pytest.raises(OODInputError, match=r"closest known: cifar_resnet \(\d+% of the keys\).*pass --model NAME"):
        model_from_checkpoint(tmp_path / "odd.th")


def test_a_benchmark_given_a_checkpoint_of_another_depth_loads_it(tmp_path):
    from ood_lib.data.benchmarks import get_benchmark

    torch.save({"state_dict": CifarResNet(44).state_dict()}, tmp_path / "r44.th")
    assert get_benchmark("cifar10").load_model(None, checkpoint=str(tmp_path / "r44.th")).depth == 44
    assert set(read_state_dict(tmp_path / "r44.th")) == set(CifarResNet(44).state_dict())


def test_verify_evaluate_and_study_take_a_resnet32_checkpoint_without_model(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save({"state_dict": {f"module.{k}": v for k, v in CifarResNet(32).state_dict().items()}}, tmp_path / "r32.th")
    classes = [f"c{i}" for i in range(10)]
    idd, fit = images(tmp_path / "id", 20, classes=classes), images(tmp_path / "fit", 30, classes=classes, seed=1)
    ood = images(tmp_path / "o", 8, seed=2, smooth=True)
    own = ["--checkpoint", str(tmp_path / "r32.th"), "--id", str(idd), "--quiet"]
    assert main(["verify", *own, "--n", "2", "--no-loop"]) == 0
    own += ["--cache-dir", str(tmp_path / "c")]
    assert "CifarResNet-32 from r32.th on 2 own ID test images" in capsys.readouterr().out
    ood_flags = ["--ood", f"tex={ood}", "--ood", f"gray:far-synthetic={images(tmp_path / 'g', 6, seed=3)}", "--fit", str(fit)]
    assert main(["evaluate", *own, *ood_flags, "--methods", "msp", "gradnorm", "knn", "--out", str(tmp_path / "r.csv")]) == 0
    assert "knn" in (tmp_path / "r.csv").read_text()
    assert main(["study", *own, *ood_flags, "--methods", *FEW, "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "far-synthetic" in out and "GradNorm beats MSP" in out
    for f in ("verdicts.csv", "mechanism.csv", "identity.csv", "report.html", "report.md", "meta.json"):
        assert (tmp_path / "rep" / f).is_file(), f


def test_command_line_errors_name_the_option(tmp_path, capsys):
    assert main(["study", "--ood", f"x={tmp_path}"]) == 2
    assert "need --id DIR" in capsys.readouterr().err
    assert main(["study", "--id", str(tmp_path), "--checkpoint", "x.th"]) == 2
    assert "at least one --ood" in capsys.readouterr().err
    assert main(["study", "--id", str(tmp_path), "--ood", "x", "--checkpoint", "x.th"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["study", "--benchmark", "embedded", "--id", str(tmp_path), "--ood", f"x={tmp_path}"]) == 2
    assert "not both" in capsys.readouterr().err


# --- the one call --------------------------------------------------------------------------------
def _check_report(result, tmp_path: Path) -> None:
    assert {"metrics", "verdicts", "mechanism", "identity", "roc"} <= set(result.tables)
    assert set(result.answer().group) <= {"near", "far-natural", "far-synthetic"}
    assert (result["identity"].verdict == "supported").all()  # GradNorm = ‖h‖₁‖p − u‖₁ through the network
    page = result.to_html(tmp_path / "report.html")
    assert page.count("data:image/png;base64,") == 2 and not re.search(r"(src|href)=['\"]https?:", page)
    assert "Is GradNorm worth it" in result.to_markdown() and "| MSP" in result.to_markdown()


def test_study_on_a_torchvision_model_from_folders_loaders_and_tensors(tmp_path, folders):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3)
    loader = DataLoader(TensorDataset(torch.randn(10, 3, 32, 32), torch.zeros(10, dtype=torch.long)), batch_size=4)
    result = ood_lib.study(net, folders["id"], {"smooth": (folders["smooth"], "near"), "noise": folders["noise"],
                                                "gauss": (torch.randn(6, 3, 32, 32) * 3, "far-synthetic"), "loader": loader},
                           folders["fit"], methods=FEW, size=32, device="cpu", progress=False,
                           cache_dir=tmp_path / "cache", model_name="ResNet-18 (random)")
    _check_report(result, tmp_path)
    assert "Is GradNorm worth it on ResNet-18 (random)?" in result.to_markdown()
    assert result.meta["marks"] == {"smooth": "near", "noise": "far-natural", "gauss": "far-synthetic",
                                    "loader": "far-natural"}
    assert "the arguments given" in result.meta["preprocessing"]["from"]
    assert result.worth_it()["worth it?"].isin(["yes", "no", "not shown"]).all()
    again = ood_lib.study(net, folders["id"], {"smooth": (folders["smooth"], "near"), "noise": folders["noise"]},
                          folders["fit"], methods=FEW, size=32, device="cpu", progress=False,
                          cache_dir=tmp_path / "cache")
    assert all(v["from_cache"] for v in again.meta["sets"].values())  # extracted once, cached


def test_study_on_a_timm_model_takes_timms_preprocessing(tmp_path, folders):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    result = ood_lib.study(net, folders["id"], {"smooth": folders["smooth"]}, methods=FEW, device="cpu",
                           progress=False, cache_dir=tmp_path / "cache")
    p = result.meta["preprocessing"]
    assert "timm" in p["from"] and p["crop"] == timm.data.resolve_data_config({}, model=net)["input_size"][1]
    assert "no ID training split" in result.meta["notes"]["knn"]  # no fitting set: fitted baselines say why
    _check_report(result, tmp_path)


def test_the_report_opens_cleanly_in_a_browser(tmp_path, folders):
    sys.path.insert(0, str(REPO / "tools"))
    import browser_check

    binary = browser_check.find_browser()
    if binary is None:
        pytest.skip("no Chromium")
    torch.manual_seed(0)
    result = ood_lib.study(CifarResNet(8, 3), folders["id"], {"smooth": folders["smooth"]}, methods=FEW,
                           device="cpu", progress=False, cache_dir=tmp_path / "cache")
    (tmp_path / "html").mkdir()
    result.to_html(tmp_path / "html" / "index.html")
    assert browser_check.check_book(tmp_path / "html", screenshots=tmp_path / "shots", browser=binary) == []


# --- bad input: named, and nothing cached ---------------------------------------------------------
class NoLinearHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class SquashedHead(NoLinearHead):
    """A linear layer, but not the last operation: its output is squashed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.tanh(self.fc(super().forward(x)))


def _bad(tmp_path, model, idd, ood, match, **kw):
    cache = tmp_path / "cache"
    with pytest.raises((OODInputError, FileNotFoundError), match=match):
        ood_lib.study(model, idd, ood, device="cpu", progress=False, cache_dir=cache, size=32, **kw)
    assert features_written(cache) == []


def test_bad_input_is_named_before_anything_is_cached(tmp_path, folders):
    net = CifarResNet(8, 3)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    _bad(tmp_path, net, folders["id"], {"e": tmp_path / "empty"}, r"OOD set 'e': no images under")
    _bad(tmp_path, net, folders["id"], {"e": tmp_path / "absent"}, r"not found")
    _bad(tmp_path, CifarResNet(8, 5), folders["id"], {"s": folders["smooth"]}, r"3 class folders, but the model has 5 outputs")
    images(tmp_path / "one", 1)
    _bad(tmp_path, net, folders["id"], {"one": tmp_path / "one"}, r"OOD set 'one': 1 image\(s\); the metrics need at least 2")
    _bad(tmp_path, net, torch.randn(4, 3, 32, 32), {"big": torch.randn(4, 3, 48, 48)},
         r"OOD set 'big': inputs of shape \(3, 48, 48\), but ID set has \(3, 32, 32\)")
    _bad(tmp_path, net, torch.randn(4, 1, 32, 32), {"x": torch.randn(4, 1, 32, 32)}, r"the model cannot take inputs of shape")
    broken = CifarResNet(8, 3)
    with torch.no_grad():
        broken.linear.bias.fill_(float("nan"))
    _bad(tmp_path, broken, folders["id"], {"s": folders["smooth"]}, r"non-finite \(NaN or Inf\) logits")
    _bad(tmp_path, NoLinearHead(), folders["id"], {"s": folders["smooth"]}, r"no nn.Linear layer \(its last layer is a Conv2d\)")
    _bad(tmp_path, SquashedHead(), folders["id"], {"s": folders["smooth"]}, r"not the output of an nn.Linear")
    _bad(tmp_path, net, folders["id"], {"near": folders["smooth"]}, r"OOD set name 'near'")
    _bad(tmp_path, net, folders["id"], {"s": (folders["smooth"], "nearish")}, r"unknown mark 'nearish'")


# --- the template chapter ---------------------------------------------------------------------------
@pytest.fixture
def nb_cache(tmp_path, embedded_model_cache, monkeypatch):
    shutil.copytree(embedded_model_cache / "models", tmp_path / "nbcache" / "models")
    monkeypatch.setenv("OOD_CACHE_DIR", str(tmp_path / "nbcache"))
    monkeypatch.delenv("OOD_DATA_ROOT", raising=False)
    sys.path.insert(0, str(REPO / "tools"))
    import run_notebook

    return run_notebook


def test_chapter_05_runs_on_another_model_and_folders(tmp_path, folders, nb_cache):
    nb = nb_cache.execute(REPO / "notebooks" / "05_your_model.py", parameters={
        "MODEL": "timm:resnet10t", "CHECKPOINT": "random", "ID_DIR": str(folders["id"]), "FIT_DIR": str(folders["fit"]),
        "OOD_DIRS": f"smooth:near={folders['smooth']},noise={folders['noise']}", "SIZE": 32,
        "REPORT": str(tmp_path / "report.html")})
    values = nb_cache.glued(nb)
    assert "resnet10t" in values["nb05_model"] and int(values["nb05_n_sets"]) == 2
    assert values["nb05_answer"].startswith("'near ") and "near:" in values["nb05_answer_long"]
    assert (tmp_path / "report.html").is_file()


def test_chapter_05_runs_on_the_embedded_default(nb_cache):
    values = nb_cache.glued(nb_cache.execute(REPO / "notebooks" / "05_your_model.py",
                                             parameters={"N_ID": 100, "N_OOD": 60, "N_FIT": 400}))
    assert values["nb05_model"] == "'MnistCNN'" and int(values["nb05_n_sets"]) == 5
    assert values["nb05_fig_verdicts"] == "<figure>"
