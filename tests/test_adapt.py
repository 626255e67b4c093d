"""AdaBN and fine-tuning of a pretrained model: what each changes, and their self-checking cache entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ood_lib import OODInputError
from ood_lib.data.files import ArrayImages
from ood_lib.models.adapt import cached_adaptation, fine_tune, recalibrate_bn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class Shifted:
    """uint8 (H, W, 3) → a float tensor of another domain (scaled and shifted); a stable repr."""

    def __call__(self, a):
        return torch.from_numpy(a).permute(2, 0, 1).float() / 64.0 + 2.0

    def __repr__(self):
        return "Shifted()"


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayImages(rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, n), Shifted())


def test_adabn_changes_only_the_batchnorm_statistics_to_the_new_domain():
    torch.manual_seed(0)
    m = Tiny().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    data = _data()
    recalibrate_bn(m, data, batch_size=8)  # five equal batches: their mean is the set's mean
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    x = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        pre = m.conv(x)
    assert torch.allclose(m.bn.running_mean, pre.mean((0, 2, 3)), atol=1e-4)  # the pass's own statistics
    assert not m.training and m.bn.momentum == 0.1
    with pytest.raises(OODInputError, match="needs BatchNorm layers"):
        recalibrate_bn(nn.Linear(2, 2), data)


def test_fine_tuning_is_deterministic_for_a_seed_and_changes_the_weights():
    torch.manual_seed(0)
    a, b = Tiny(), Tiny()
    b.load_state_dict(a.state_dict())
    w0 = a.fc.weight.clone()
    fine_tune(a, _data(), epochs=1, batch_size=8, seed=3)
    fine_tune(b, _data(), epochs=1, batch_size=8, seed=3)
    assert not torch.equal(a.fc.weight, w0) and torch.equal(a.fc.weight, b.fc.weight)
    with pytest.raises(OODInputError, match="at least one epoch"):
        fine_tune(a, _data(), epochs=0)


def test_an_adaptation_is_cached_and_an_edited_entry_is_rebuilt(tmp_path):
    torch.manual_seed(0)
    base = Tiny().eval()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    m1, path = cached_adaptation(base, _data(), "adabn", tag="tiny", cache_dir=tmp_path, batch_size=16)
    stamp = path.stat().st_mtime_ns
    fresh = Tiny()
    fresh.load_state_dict(state)
    m2, path2 = cached_adaptation(fresh, _data(), "adabn", tag="tiny", cache_dir=tmp_path, batch_size=16)
    assert path2 == path and path.stat().st_mtime_ns == stamp  # read back, not recomputed
    assert torch.equal(m1.bn.running_mean, m2.bn.running_mean)
    entry = torch.load(path, weights_only=True)
    entry["state_dict"]["bn.running_mean"] += 1.0  # edited by hand: the fingerprint no longer matches
    torch.save(entry, path)
    again = Tiny()
    again.load_state_dict(state)
    with pytest.warns(UserWarning, match="stale or edited"):
        m3, _ = cached_adaptation(again, _data(), "adabn", tag="tiny", cache_dir=tmp_path, batch_size=16)
    assert torch.equal(m3.bn.running_mean, m1.bn.running_mean)
    with pytest.raises(OODInputError, match="unknown adaptation"):
        cached_adaptation(Tiny(), _data(), "mixup", tag="tiny", cache_dir=tmp_path)
