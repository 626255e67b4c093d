"""Feature extraction sharded over processes with ``torchrun`` (appendix *Run it on your own model
and data*, section *At scale*).

``torchrun --nproc-per-node N -m ood_lib extract --benchmark B …`` starts N ranks (over one or
many machines). Each split of the benchmark has ``⌈n/B⌉`` batches of B images; rank r of W takes
the contiguous batches ``[⌊r·m/W⌋, ⌊(r+1)·m/W⌋)`` of its m batches, so every batch holds the same
images as in one process — on the CPU the arrays are bit-identical — and the shards, joined in
rank order, are the whole split in order. Each rank writes its shard atomically into the cache
(keyed by the entry's key, the batch size, the device type, its rank and the world size; an
interrupted run reuses the shards already written); after all ranks are done, rank 0 joins them
into the very entry one process would write (same path, key and bytes) and deletes the shards.

A model that has to be trained first is trained by rank 0 alone; the other ranks wait, then load it
from the model cache. Scoring is not sharded: ``evaluate`` reads the cached features in one process.
The ranks talk only through small Python objects (gloo on the CPU, NCCL on GPUs); the arrays go
through the shared cache folder, which every rank must see.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from .._checks import OODInputError
from ..cache import read_arrays, write_arrays
from .config import RunConfig
from .features import (
    Features,
    assemble,
    cache_key,
    dataset_fingerprint,
    extract,
    features_path,
    forward_batches,
    read_features,
    resolve_device,
    write_features,
)


def in_group() -> bool:
    """Whether this process belongs to an initialised process group (e.g. started by torchrun)."""
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    return (dist.get_rank(), dist.get_world_size()) if in_group() else (0, 1)


def rank_device(device: str = "auto") -> torch.device:
    """The device of this rank: ``cuda:$LOCAL_RANK`` for 'auto' or 'cuda' when CUDA is present."""
    local = os.environ.get("LOCAL_RANK")
    if local is not None and device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{int(local)}")
    return resolve_device(device)


def shard_batches(n_items: int, batch_size: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous batch numbers: ``[⌊r·m/W⌋, ⌊(r+1)·m/W⌋)`` of ``m = ⌈n/B⌉``."""
    m = (n_items + batch_size - 1) // batch_size
    return range(rank * m // world_size, (rank + 1) * m // world_size)


def shard_path(cache_dir: str | Path | None, key: str, rank: int, world_size: int) -> Path:
    """Where rank ``rank`` of ``world_size`` writes its shard of the entry ``key``."""
    return features_path(cache_dir, key).parent / "shards" / f"{key}-{rank}of{world_size}.npz"


def shard_key(key: str, batch_size: int, device_type: str, rank: int, world_size: int) -> str:
    """The key a shard is written and checked under: a shard is only reused for the same split."""
    return f"{key}/batch {batch_size}/{device_type}/shard {rank} of {world_size}"


def agree(error: BaseException | None) -> None:
    """A barrier that also fails together: if any rank hit an error, every rank raises (the rank
    that hit it re-raises its own)."""
    _, w = world()
    if not in_group():
        if error is not None:
            raise error
        return
    msgs: list[Any] = [None] * w
    dist.all_gather_object(msgs, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    bad = [(r, m) for r, m in enumerate(msgs) if m is not None]
    if bad:
        raise OODInputError("; ".join(f"rank {r} failed: {m}" for r, m in bad))


def _run(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    try:
        return fn(), None
    except Exception as exc:  # handed to agree(), which re-raises it on every rank
        return None, exc


def extract_sharded(
    model: torch.nn.Module, dataset: Dataset, *, device: torch.device, batch_size: int,
    cache_dir: str | Path | None = None, progress: bool = True, desc: str = "features",
) -> Features | None:
    """The cached features of ``dataset``, computed by every rank of the process group on its
    shard and joined by rank 0. Rank 0 returns them; the other ranks return None."""
    rank, w = world()
    key = cache_key(model, dataset, data_fp := dataset_fingerprint(dataset))
    path, t0 = features_path(cache_dir, key), time.perf_counter()
    cached, err = _run(lambda: read_features(path, key) if rank == 0 else None)
    flag = [cached is not None, key]
    if in_group():
        dist.broadcast_object_list(flag, src=0)
    if err is None and flag[1] != key:
        err = OODInputError(f"{desc}: this rank sees other images or weights than rank 0 (cache key {key} ≠ "
                            f"{flag[1]}); every rank must read the same data and model")
    agree(err)
    if flag[0]:
        if cached is not None:
            cached.data_fingerprint = data_fp
        return cached
    _, err = _run(lambda: _write_shard(model, dataset, device, batch_size, shard_path(cache_dir, key, rank, w),
                                        shard_key(key, batch_size, device.type, rank, w), progress and rank == 0,
                                        desc))
    agree(err)
    feats = None
    if rank == 0:
        feats, err = _run(lambda: _join_shards(dataset, cache_dir, key, data_fp, batch_size, device, w, desc))
        if feats is not None:
            feats.seconds = time.perf_counter() - t0
    agree(err)
    return feats


def _write_shard(model, dataset, device, batch_size, path, skey, progress, desc) -> None:
    if read_arrays(path, skey, ("h", "logits", "labels")) is not None:
        return  # written by an earlier, interrupted run
    rank, w = world()
    batches = shard_batches(len(dataset), batch_size, rank, w)
    h, f, y, skipped, seconds = forward_batches(model, dataset, device, batch_size, batches=batches,
                                                progress=progress, desc=desc)
    if not (np.isfinite(h).all() and np.isfinite(f).all()):
        raise OODInputError(f"{desc}: the model produced non-finite features or logits")
    write_arrays(path, skey, {"h": h, "logits": f, "labels": y}, n=len(h), skipped=skipped, seconds=seconds)


def _join_shards(dataset, cache_dir, key, data_fp, batch_size, device, w, desc) -> Features:
    parts = []
    for r in range(w):
        p = shard_path(cache_dir, key, r, w)
        got = read_arrays(p, shard_key(key, batch_size, device.type, r, w), ("h", "logits", "labels"))
        if got is None:
            raise OODInputError(f"{desc}: the shard of rank {r} ({p}) is missing or unusable; is the cache "
                                "folder shared by every rank?")
        parts.append(got)
    full = [(a, m) for a, m in parts if len(a["h"])]
    cat = {n: np.concatenate([a[n] for a, _ in full]) if full else np.zeros((0, 0), np.float32)
           for n in ("h", "logits", "labels")}
    skipped = [i for _, m in parts for i in m["skipped"]]
    feats = assemble(cat["h"], cat["logits"], cat["labels"].astype(np.int64), skipped, dataset, key, data_fp, 0.0,
                     desc)
    write_features(features_path(cache_dir, key), feats)
    for r in range(w):
        shard_path(cache_dir, key, r, w).unlink(missing_ok=True)
    try:
        shard_path(cache_dir, key, 0, w).parent.rmdir()
    except OSError:
        pass  # other shards are still there
    return feats


def extract_benchmark(benchmark: str | Any, config: RunConfig | None = None, **overrides: Any) -> dict[str, Features]:
    """Every split's features of ``benchmark`` in the cache: the entries that ``evaluate`` with the
    same :class:`RunConfig` (data root, seed, subsets, checkpoint, cache) reads. ``overrides`` are
    RunConfig fields. In a process group (even of one rank) the splits are sharded over the ranks
    and rank 0 returns them (the others return ``{}``); otherwise this process extracts them.
    ``benchmark`` is a name or an object with the API of :class:`ood_lib.data.benchmarks.Benchmark`
    (``splits``, ``load_model``, ``batch_size``)."""
    from ..data import files as D
    from ..data.benchmarks import get_benchmark

    cfg = (config or RunConfig()).replace(**overrides)
    rank, w = world()
    sharded = in_group()
    if cfg.cache_dir is False and sharded:
        raise OODInputError("sharded extraction joins the ranks' shards through the cache: give it a cache folder")
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    name = benchmark if isinstance(benchmark, str) else getattr(bench, "name", "benchmark")
    dev = rank_device(cfg.device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    torch.manual_seed(cfg.seed)
    splits, err = _run(lambda: bench.splits(D.data_root(cfg.data_root), seed=cfg.seed, n_id=cfg.n_id,
                                            n_ood=cfg.n_ood, n_fit=cfg.n_fit))
    agree(err)

    def load() -> torch.nn.Module:
        other = {"model": cfg.model} if cfg.model is not None else {}  # another architecture than the declared one
        return bench.load_model(D.data_root(cfg.data_root), seed=cfg.seed, checkpoint=cfg.checkpoint,
                                cache_dir=cfg.cache_dir, progress=cfg.progress and rank == 0, **other)

    model, err = _run(load) if rank == 0 else (None, None)
    agree(err)  # rank 0 has trained (and cached) the model if it had to be trained
    if rank > 0:
        model, err = _run(load)
    agree(err)
    bs = cfg.batch_size or bench.batch_size
    out: dict[str, Features] = {}
    for key, split in splits.items():
        desc = f"{name}/{key}"
        if not sharded:
            out[key] = extract(model, split.dataset, device=dev, batch_size=bs, cache_dir=cfg.cache_dir,
                               progress=cfg.progress, desc=desc)
        else:
            feats = extract_sharded(model, split.dataset, device=dev, batch_size=bs, cache_dir=cfg.cache_dir,
                                    progress=cfg.progress, desc=desc)
            if feats is not None:
                out[key] = feats
    return out


def run_extract(benchmark: str | Any, cfg: RunConfig, timeout_min: float = 60.0) -> dict[str, Features]:
    """``extract`` (the command line's): joins the process group that ``torchrun`` describes
    ($WORLD_SIZE), if any, extracts every split and leaves the group; rank 0 prints what it did."""
    group = "WORLD_SIZE" in os.environ and not dist.is_initialized()  # started by torchrun
    if group:
        dev = rank_device(cfg.device)
        timeout = datetime.timedelta(minutes=timeout_min)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", timeout=timeout, device_id=dev)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    try:
        t0 = time.perf_counter()
        feats = extract_benchmark(benchmark, cfg)
        rank, w = world()
        if rank == 0:
            name = benchmark if isinstance(benchmark, str) else getattr(benchmark, "name", "benchmark")
            print(f"{name}: {len(feats)} splits on {w} process{'es' if w > 1 else ''} "
                  f"in {time.perf_counter() - t0:.1f} s")
            for key, f in feats.items():
                how = "cached" if f.from_cache else f"{f.seconds:.1f} s"
                print(f"  {key:20s} {len(f.h):7d} images  {f.n_skipped} skipped  {how}  {f.key}")
    finally:
        if group:
            dist.destroy_process_group()
    return feats
