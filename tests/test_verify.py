"""verify(): the table on the real CIFAR-10 ResNet-20, and the command line."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import RESNET20, SHARED_DATA, needs_shared_data
from ood_lib import OODInputError
from ood_lib.models import CifarResNet, MnistCNN, load_checkpoint
from ood_lib.gradients.verify import recorded_checks, verify
from ood_lib.models.anatomy import default_deeper


@needs_shared_data("weights", "resnet20-12fca82f.th")
def test_resnet20_checkpoint_loads_strictly():
    model = load_checkpoint(CifarResNet(), RESNET20)
    assert sum(p.numel() for p in model.parameters()) == 269722
    assert default_deeper(model) == "layer3"


def test_checkpoint_for_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "cnn.pt"
    torch.save(MnistCNN().state_dict(), path)
    with pytest.raises(OODInputError, match="does not match the CifarResNet architecture"):
        load_checkpoint(CifarResNet(), path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(CifarResNet(), tmp_path / "missing.th")
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint")
    with pytest.raises(OODInputError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(CifarResNet(), tmp_path / "junk.th")


@needs_shared_data("CIFAR10-JPEG", "test")
@needs_shared_data("weights", "resnet20-12fca82f.th")
def test_verify_on_real_images_via_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "ood_lib", "verify", "--checkpoint", str(RESNET20), "--n", "2", "--seed", "1", "--no-loop"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "2 cifar10 ID test images" in out and "layer3" in out and "input" in out
    assert "worst difference in V units" in out


@needs_shared_data("CIFAR10-JPEG", "test")
@needs_shared_data("weights", "resnet20-12fca82f.th")
def test_verify_table_real_model():
    from ood_lib.data.benchmarks import get_benchmark

    bench = get_benchmark("cifar10")
    model = bench.load_model(SHARED_DATA)
    ds = bench.splits(SHARED_DATA, n_id=3)["id_test"].dataset
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    t = verify(model, x, temperature=1.5, loop=False)
    last = t[t.wrt.isin(["W", "W,b"])]
    assert (last.v_diff_vmap <= 1e-10).all(), last
    assert (last.spread <= 1e-10).all()
    deep = t[~t.wrt.isin(["W", "W,b"])]
    assert set(deep.wrt) == {"layer3", "input"}
    assert (deep.spread > 1e-2).all() and (deep.rel_diff_vmap > 1e-2).all()


def test_verify_embedded_command_runs(tmp_path, embedded_model_cache):
    import shutil

    shutil.copytree(embedded_model_cache / "models", tmp_path / "models")  # the session's trained CNN
    env = {**__import__("os").environ, "OOD_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "ood_lib", "verify", "--n", "4", "--no-loop"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "embedded ID test images" in r.stdout and "fc1" in r.stdout


def test_verify_cli_reports_missing_images(tmp_path):
    ck = tmp_path / "weights" / "r.th"
    ck.parent.mkdir()
    torch.save(CifarResNet().state_dict(), ck)
    r = subprocess.run([sys.executable, "-m", "ood_lib", "verify", "--checkpoint", str(ck)],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "needs its real images" in r.stderr


def test_max_rel_diff_by_hand():
    from ood_lib.gradients.verify import max_rel_diff

    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    assert max_rel_diff(t([1.0, 2.0, 0.0]), t([1.0, 4.0, 0.0])) == 0.5  # |2 − 4| / 4; 0 where both are 0
    assert max_rel_diff(t([]), t([])) == 0.0
    assert max_rel_diff(t([1e-3]), t([0.0])) > 1e300  # a zero reference is not divided away


def test_gaia_last_module():
    from ood_lib.gradients.verify import gaia_last_module

    x = torch.randn(2, 3, 32, 32)
    assert gaia_last_module(CifarResNet().eval(), x) == "layer3.2.bn2"  # the last BatchNorm called
    assert gaia_last_module(MnistCNN().eval(), torch.randn(2, 1, 28, 28)) == "fc1"  # no BatchNorm: ReLU(fc1) = h


def test_recorded_checks_name_a_foreign_table(tmp_path):
    assert recorded_checks(tmp_path).empty
    pd.DataFrame({"score": ["gradnorm"], "wrt": ["W"], "v_diff_loop": [2e-16]}).to_csv(
        tmp_path / "verify_m.csv", index=False)
    pd.DataFrame({"parameter": ["w", "b"], "rel_diff_l1": [1e-15, 3e-15], "rel_diff_l2sq": [2e-15, np.nan]}).to_csv(
        tmp_path / "verify_layers_b.csv", index=False)
    t = recorded_checks(tmp_path).set_index("name")
    assert t.loc["m", "check"] == "last layer" and t.loc["m", "worst"] == 2e-16
    assert t.loc["b", "check"] == "every layer" and t.loc["b", "rows"] == 2 and t.loc["b", "worst"] == 3e-15
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "verify_x.csv", index=False)
    with pytest.raises(OODInputError, match="verify_x.csv"):
        recorded_checks(tmp_path)
