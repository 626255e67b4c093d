"""The machine a result was measured on, as one CSV row: ``python -m ood_lib.run.envinfo [--device auto]``.

Every results file of the study records where it came from (device name, versions); this is the
same record for scripts that write several files (``benchmarks/device_check.sh``).
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys


def environment(device: str = "auto") -> dict[str, str]:
    """Device name, CUDA/cuDNN, and the versions of Python, torch, torchvision, numpy and ood_lib."""
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
        "platform": platform.platform(),
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
