"""What exact per-sample gradient norms of *every* parameter tensor cost, side by side in one run.

    .venv/bin/python benchmarks/layer_cost.py [--model resnet20] [--batch 128] [--repeats 7] [--device cpu]

The per-layer paths of :mod:`ood_lib.run.cost`, each over the same batch of random images through the
same random-weight model, timed round-robin by :func:`ood_lib.run.cost.score_cost` (one run of each
path per round, after a warm-up of each) so that drift in the machine's speed falls on all alike:

* ``forward`` — one batched forward pass, no graph;
* ``forward_backward`` — one batched forward and one backward of the summed GradNorm loss: every
  parameter's gradient *summed over the batch* — the yardstick;
* ``per_layer_hooks`` — per-image ‖∇_θ ℓ‖₁ and ‖∇_θ ℓ‖₂² of every parameter tensor θ from one batched
  forward + backward per ``--chunk`` images, each layer's per-sample gradient rebuilt from its input
  and back-propagated signal; ``per_layer_hooks_l1`` — the same with ‖∇_θ ℓ‖₁ alone;
* ``per_layer_all`` — the plain ``torch.func`` path, ``vmap(grad(·))`` in chunks of ``--chunk``;
* ``per_layer_loop`` — one image at a time, ``loss.backward()`` through the whole network, the norms
  of every ``.grad`` (timed on ``--loop-images`` images, reported per image).

Prints the median and the spread (min–max) of milliseconds per image over the repeats, and each
median's ratio to ``forward_backward``; ``--out`` writes the table as CSV.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ood_lib.run.cost import LAYER_CHUNK, LAYER_EXTRA_PATHS, LAYER_LOOP_PATHS, LAYER_PATHS, score_cost
from ood_lib.run.features import resolve_device
from ood_lib.models import build_model

SHAPES = {"resnet20": (3, 32, 32), "densenet_bc100": (3, 32, 32), "mnist_cnn": (1, 28, 28)}
TIMED = ("forward",) + LAYER_PATHS + LAYER_EXTRA_PATHS + LAYER_LOOP_PATHS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", choices=list(SHAPES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--loop-images", type=int, default=16)
    p.add_argument("--chunk", type=int, default=LAYER_CHUNK, help="images per forward + backward of the batched paths")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--out", help="write the table here as CSV")
    a = p.parse_args()
    if a.repeats < 5:
        p.error("--repeats must be at least 5")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    torch.manual_seed(0)
    model = build_model(a.model).to(dev).eval()
    x = torch.randn(a.batch, *SHAPES[a.model], device=dev)
    print(f"{a.model}, batch {a.batch} (chunks of {a.chunk}), device {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {a.repeats} round-robin repeats\n")
    t = score_cost(model, x, label=a.model, repeats=a.repeats, paths=TIMED, loop_images=a.loop_images, chunk=a.chunk)
    ms = t.set_index("path").ms_per_image
    t = t.assign(ratio_to_forward_backward=t.ms_per_image / ms["forward_backward"], chunk=a.chunk)
    print(t[["path", "images_timed", "ms_per_image", "ms_min", "ms_max", "ratio_to_forward_backward"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nbatch-1 loop / per-layer hooks: {ms['per_layer_loop'] / ms['per_layer_hooks']:.1f}x   "
          f"plain torch.func / per-layer hooks: {ms['per_layer_all'] / ms['per_layer_hooks']:.2f}x")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        t.to_csv(a.out, index=False)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
