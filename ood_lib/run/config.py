"""One run configuration, shared by :func:`ood_lib.run.evaluate.prepare`, :func:`ood_lib.run.evaluate.run_benchmark`
and the command line (whose ``evaluate`` options are generated from the fields below)."""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .._checks import OODInputError, check_max_skipped, unknown_name

MIN_BOOT = 100  # fewer resamples give intervals too coarse to mean anything (1 gives zero width)
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _opt(default: Any, help: str, type: type | None = None, nargs: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "type": type, "nargs": nargs})


@dataclass(frozen=True)
class RunConfig:
    """How to run a benchmark: where the data and cache are, which device, seed and subsets, which
    methods, and the statistics asked for. Every field has a default; ``replace`` overrides some."""

    data_root: str | Path | None = _opt(None, "data root (default: $OOD_DATA_ROOT)", str)
    device: str = _opt("auto", "'auto', 'cpu' or 'cuda[:N]'", str)
    seed: int = _opt(0, "seed of the subsets, the bootstrap and any training", int)
    cache_dir: str | Path | bool | None = _opt(
        None, "feature and score cache (default: $OOD_CACHE_DIR or ~/.cache/ood_lib)", str)
    progress: bool = _opt(True, "show progress bars")
    n_id: int | None = _opt(None, "subsample the ID test set (seeded)", int)
    n_ood: int | None = _opt(None, "subsample each OOD set (seeded)", int)
    n_fit: int | None = _opt(None, "subsample the ID training split used for fitting", int)
    model: str | None = _opt(None, "architecture instead of the benchmark's: a registered name, cifar_resnet "
                             "(any 6n+2 depth), densenet_bc, torchvision:NAME or timm:NAME; weights from --checkpoint", str)
    checkpoint: str | None = _opt(None, "model weights file ('random' for seeded random weights)", str)
    batch_size: int | None = _opt(None, "images per forward pass (default: the benchmark's)", int)
    methods: tuple[str, ...] | None = _opt(None, "only these methods (default: all; a repeated name counts once, order kept)", str, "*")
    bootstrap: int = _opt(0, "bootstrap resamples for AUROC/FPR95 intervals", int)
    ci_methods: tuple[str, ...] | None = _opt(None, "methods that get intervals (default: all)", str, "*")
    knn_k: int | None = _opt(None, "neighbours of the KNN detector (default: the paper's rule for the bank size)", int)
    detector_params: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, metadata={"help": "hyper-parameters per detector name, e.g. {'react': {'percentile': 95}}"})
    max_skipped: float = _opt(0.01, "stop when more than this fraction of a set's images cannot be read "
                              "(default 0.01; each set's unreadable files are listed on stderr and in the results' .json)", float)

    def __post_init__(self) -> None:
        for name in ("methods", "ci_methods"):
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, str):
                    raise OODInputError(f"{name} must be a list of names, got the string {v!r}")
                object.__setattr__(self, name, tuple(dict.fromkeys(v)))  # a repeated name counts once
        for name in ("bootstrap", "knn_k", "seed"):
            if name == "knn_k" and self.knn_k is None:
                continue
            if not isinstance(getattr(self, name), int):
                raise OODInputError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if self.bootstrap < 0 or (self.knn_k is not None and self.knn_k < 1):
            raise OODInputError(f"need bootstrap >= 0 and knn_k >= 1, got {self.bootstrap} and {self.knn_k}")
        check_options(self)

    def replace(self, **overrides: Any) -> "RunConfig":
        """A copy with ``overrides``; an unknown field is an error that lists the valid ones."""
        names = [f.name for f in dataclasses.fields(self)]
        for k in overrides:
            if k not in names:
                raise OODInputError(f"unknown run option {k!r}; valid: {', '.join(names)}")
        return dataclasses.replace(self, **overrides)

    def params_for(self, method: str) -> dict[str, Any]:
        """The hyper-parameters a run gives the detector ``method`` (``knn_k`` for ``knn``)."""
        base = {"knn": {"k": self.knn_k}}.get(method, {}) if self.knn_k is not None else {}
        return {**base, **dict(self.detector_params.get(method, {}))}

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain values (paths as strings), for the results' metadata."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    # --- the command line ----------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
        """Add one ``--option`` per field, or per field named in ``only`` (``--quiet`` for ``progress``;
        ``detector_params`` is API-only)."""
        for f in dataclasses.fields(cls):
            if only is not None and f.name not in only:
                continue
            if f.name == "progress":
                parser.add_argument("--quiet", action="store_true", help="no progress bars")
            elif f.metadata.get("type") is not None:
                parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default,
                                    type=f.metadata["type"], nargs=f.metadata["nargs"], help=f.metadata["help"])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RunConfig":
        """The configuration the parsed command line describes."""
        kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return cls(progress=not getattr(args, "quiet", False), **kw)


def check_device(device: Any) -> str:
    """``device`` if it is 'auto', 'cpu' or 'cuda[:N]' and, for CUDA, such a device is present."""
    import torch

    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise OODInputError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'")
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if n == 0:
            raise OODInputError(f"device {device!r} was asked for but no CUDA device is available")
        if index >= n:
            raise OODInputError(f"device {device!r} was asked for but this machine has {n} CUDA device(s)")
    return device


def check_options(cfg: RunConfig) -> None:
    """The checks of :class:`RunConfig` beyond types: each option's range, the device, and the
    method names (every name in ``methods`` and ``ci_methods`` must be a registered detector)."""
    from ..detectors import DETECTORS

    if isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise OODInputError(f"seed must be an integer >= 0, got {cfg.seed!r}")
    check_device(cfg.device)
    check_max_skipped(cfg.max_skipped)
    if cfg.batch_size is not None and (not isinstance(cfg.batch_size, int) or cfg.batch_size < 1):
        raise OODInputError(f"batch size must be an integer >= 1 (or None: the benchmark's), got {cfg.batch_size!r}")
    if 0 < cfg.bootstrap < MIN_BOOT:
        raise OODInputError(f"bootstrap must be 0 (no intervals) or >= {MIN_BOOT} resamples, got {cfg.bootstrap}")
    for name in ("methods", "ci_methods"):
        for m in getattr(cfg, name) or ():
            if m not in DETECTORS:
                raise unknown_name("method" if name == "methods" else "ci_methods name", m, DETECTORS)
