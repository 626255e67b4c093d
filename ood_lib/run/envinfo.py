"""The machine a result was measured on, as one CSV row: ``python -m ood_lib.run.envinfo [--device auto]``.

Every results file of the study records where it came from (device name, versions); this is the
same record for scripts that write several files (``benchmarks/device_check.sh``).
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys


def vector_unit() -> str:
    """The CPU code path PyTorch's kernels take here ("AVX2", "AVX512", …; ``torch.backends.cpu``).

    A network trained on the CPU depends on it: the same float32 sums in another order (AVX2 vs
    AVX-512) give another trained model, so a recorded training run is reproducible on processors
    of its own vector unit only."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def environment(device: str = "auto") -> dict[str, str]:
    """Device name, CUDA/cuDNN, the CPU's vector unit, and the versions of Python, torch, torchvision,
    numpy and ood_lib."""
    import numpy as np
    import torch
    import torchvision

    from .._version import __version__
    from .features import resolve_device

    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "device": str(dev), "device_name": name,
        "cuda": str(torch.version.cuda or ""), "cudnn": str(torch.backends.cudnn.version() or ""),
        "gpus": str(torch.cuda.device_count()), "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "numpy": np.__version__, "ood_lib": __version__,
        "platform": platform.platform(), "vector_unit": vector_unit(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ood_lib.run.envinfo", description=__doc__)
    p.add_argument("--device", default="auto")
    env = environment(p.parse_args(argv).device)
    w = csv.DictWriter(sys.stdout, fieldnames=list(env))
    w.writeheader()
    w.writerow(env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
