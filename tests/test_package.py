import subprocess
import sys
from pathlib import Path

import ood_lib


def test_tests_use_the_installed_package():
    assert "site-packages" in Path(ood_lib.__file__).parts, ood_lib.__file__


def test_import_has_no_side_effects():
    code = (
        "import random, warnings, torch, numpy as np\n"
        "s1 = torch.random.get_rng_state().clone(); n1 = np.random.get_state()[1].copy()\n"
        "f1 = list(warnings.filters)\n"
        "import ood_lib, ood_lib.evaluate, ood_lib.benchmarks, ood_lib.verify\n"
        "assert torch.equal(s1, torch.random.get_rng_state())\n"
        "assert (n1 == np.random.get_state()[1]).all()\n"
        "assert f1 == list(warnings.filters)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
