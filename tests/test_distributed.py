"""Sharded extraction: two CPU ranks (gloo on 127.0.0.1) write the very cache one process writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ood_lib
from ood_lib.data import ArrayImages, ImageFiles, Split
from ood_lib.cache import write_arrays
from ood_lib.run.distributed import extract_benchmark, extract_sharded, shard_batches, shard_key, shard_path
from ood_lib.run.features import cache_key, extract, read_features
from ood_lib.models import FeatureModel, MnistCNN

SRC = str(Path(ood_lib.__file__).resolve().parents[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": SRC, "MASTER_ADDR": "127.0.0.1", **extra}
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # keep gloo's traffic on the loopback device
    return env


def cache_files(cache: Path) -> dict[str, bytes]:
    return {p.relative_to(cache).as_posix(): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}


def test_shards_are_whole_contiguous_batches():
    for n, b, w in [(1000, 32, 2), (100, 256, 2), (7, 2, 3), (5, 1, 8)]:
        parts = [shard_batches(n, b, r, w) for r in range(w)]
        assert [i for p in parts for i in p] == list(range((n + b - 1) // b))
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_torchrun_two_cpu_ranks_write_the_single_process_cache(tmp_path):
    """``torchrun --nproc-per-node 2 -m ood_lib extract`` on the embedded benchmark
    (subsampled, random CNN weights) gives byte-identical cache files to one process."""
    torch.manual_seed(5)
    ckpt = tmp_path / "cnn.pt"
    torch.save(MnistCNN().state_dict(), ckpt)
    args = ["extract", "--benchmark", "embedded", "--checkpoint", str(ckpt), "--n-id", "200", "--n-ood", "100",
            "--n-fit", "300", "--batch-size", "32", "--device", "cpu", "--quiet"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "ood_lib"]
    run = subprocess.run(cmd + args + ["--cache-dir", str(tmp_path / "two")], env=loopback_env(),
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "7 splits on 2 processes" in run.stdout
    one = extract_benchmark("embedded", checkpoint=str(ckpt), n_id=200, n_ood=100, n_fit=300, batch_size=32,
                            device="cpu", cache_dir=tmp_path / "one", progress=False)
    a, b = cache_files(tmp_path / "one"), cache_files(tmp_path / "two")
    assert len(a) == 7 and all(k.startswith("features/") for k in a)
    assert sorted(a) == sorted(b)  # same entries, and no shard left behind
    for k in a:
        assert a[k] == b[k], f"{k} differs"
    for f in one.values():
        again = read_features(tmp_path / "two" / "features" / f"{f.key}.npz", f.key)
        np.testing.assert_array_equal(again.h, f.h)
    from ood_lib.run.evaluate import prepare

    prep = prepare("embedded", checkpoint=str(ckpt), n_id=200, n_ood=100, n_fit=300, device="cpu",
                   cache_dir=tmp_path / "two", progress=False)
    assert all(f.from_cache for f in prep.feats.values()) and len(prep.feats) == 7  # what evaluate reads


def test_an_interrupted_run_reuses_its_whole_shards_and_redoes_damaged_ones(tmp_path):
    torch.manual_seed(0)
    model = SmallNet().eval()
    ds = ArrayImages(np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), None, ToTensor())
    ref = extract(model, ds, cache_dir=False, progress=False, batch_size=4)
    key, cpu = cache_key(model, ds), torch.device("cpu")
    shard = shard_path(tmp_path, key, 0, 1)
    marked = ref.h + 1  # a shard left by an earlier run under this very key: taken as it is
    write_arrays(shard, shard_key(key, 4, "cpu", 0, 1), {"h": marked, "logits": ref.logits, "labels": ref.labels},
                 n=10, skipped=[], seconds=1.0)
    got = extract_sharded(model, ds, device=cpu, batch_size=4, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(got.h, marked)
    assert not shard.parent.exists()  # joined, then removed
    (tmp_path / "features" / f"{key}.npz").unlink()
    shard.parent.mkdir()
    shard.write_bytes(b"half a shard")
    with pytest.warns(UserWarning, match="unusable"):
        got = extract_sharded(model, ds, device=cpu, batch_size=4, cache_dir=tmp_path, progress=False)
    assert got.h.tobytes() == ref.h.tobytes()


# --- a small benchmark with image files, one of them broken, and a model that must be "trained" ---
class SmallNet(FeatureModel):
    head_name = "fc"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).flatten(1)


class ToTensor:
    def __call__(self, img) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)

    def __repr__(self) -> str:
        return "ToTensor()"


class FolderBench:
    """Splits ``files`` (PNG files, one unreadable) and ``arrays``; a model trained once and cached."""

    name, batch_size = "folder", 4

    def __init__(self, root: Path, fail_rank: int | None = None, fault: str = "") -> None:
        self.root, self.fail_rank, self.fault = root, fail_rank, fault

    def failing(self) -> bool:
        return int(os.environ.get("RANK", "0")) == self.fail_rank

    def splits(self, root, seed=0, n_id=None, n_ood=None, n_fit=None):
        paths = sorted((self.root / "images").rglob("*.png"))
        if self.failing() and self.fault == "other data":
            paths = paths[1:]
        imgs = np.random.default_rng(1).integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
        return {"files": Split("files", ImageFiles(paths, np.arange(len(paths)) % 3, ToTensor(), (3, 8, 8))),
                "arrays": Split("arrays", ArrayImages(imgs, None, ToTensor()))}

    def load_model(self, root, seed=0, checkpoint=None, cache_dir=None, progress=False):
        rank = int(os.environ.get("RANK", "0"))
        if self.failing() and self.fault == "no weights":
            raise FileNotFoundError(f"no weights on rank {rank}")
        path = Path(cache_dir) / "models" / "small.pt"
        torch.manual_seed(seed)
        model = SmallNet()
        if path.is_file():
            model.load_state_dict(torch.load(path))
            return model
        time.sleep(1.0)  # "training": a rank that did not wait would train too
        with open(self.root / "trained.log", "a") as fh:
            fh.write(f"rank {rank}\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        return model


def make_images(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(13):
        folder = root / "images" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    (root / "images" / "c1" / "09.png").write_bytes(b"not an image")


def rank_main(rank: int, world: int, port: int, root: str, fail_rank: int | None, fault: str) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=__import__("datetime").timedelta(seconds=60))
    try:
        extract_benchmark(FolderBench(Path(root), fail_rank, fault), device="cpu", cache_dir=Path(root) / "two",
                          progress=False)
        outcome = "ok"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    finally:
        dist.destroy_process_group()
    (Path(root) / f"rank{rank}.txt").write_text(outcome)


def spawn_ranks(root: Path, world: int = 2, fail_rank: int | None = None, fault: str = "") -> list[str]:
    ctx = torch.multiprocessing.start_processes(rank_main, args=(world, free_port(), str(root), fail_rank, fault),
                                                nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the ranks did not finish (a rank waits forever)")
    return [(root / f"rank{r}.txt").read_text() for r in range(world)]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    make_images(root)
    return root, spawn_ranks(root)


def test_model_is_trained_by_rank_0_only(folder_run):
    root, outcomes = folder_run
    assert outcomes == ["ok", "ok"]
    assert (root / "trained.log").read_text() == "rank 0\n"


def test_sharded_image_files_match_one_process_and_name_the_skipped_file(folder_run):
    root, _ = folder_run
    one = extract_benchmark(FolderBench(root), device="cpu", cache_dir=root / "one", progress=False)
    a, b = cache_files(root / "one" / "features"), cache_files(root / "two" / "features")
    assert sorted(a) == sorted(b) and len(a) == 2
    assert all(a[k] == b[k] for k in a)
    files = read_features(root / "two" / "features" / f"{one['files'].key}.npz", one["files"].key)
    broken = sorted((root / "images").rglob("*.png")).index(root / "images" / "c1" / "09.png")
    assert broken >= 8  # in rank 1's shard (batches 2–3 of 4): its position is offset by rank 0's images
    assert (files.n_skipped, files.skipped, files.skipped_files) == (1, [broken], ["c1/09.png"])
    assert len(files.h) == 12 and one["arrays"].skipped == []


@pytest.mark.parametrize("fault,error", [("no weights", "FileNotFoundError: no weights on rank 1"),
                                         ("other data", "OODInputError: folder/files: this rank sees other images")])
def test_a_failing_rank_fails_every_rank(tmp_path, fault, error):
    """Rank 1 cannot load the model, or reads other files than rank 0: both ranks stop with the reason."""
    make_images(tmp_path)
    outcomes = spawn_ranks(tmp_path, fail_rank=1, fault=fault)
    assert outcomes[1].startswith(error)
    assert outcomes[0].startswith("OODInputError: rank 1 failed: " + error.split(": ", 1)[0])
