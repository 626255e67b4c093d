"""What exact per-sample gradient norms of *every* parameter tensor cost, side by side in one run.

    .venv/bin/python benchmarks/layer_cost.py [--model resnet20] [--batch 128] [--repeats 7] [--device cpu]

Paths, each over the same batch of random 32×32 images through the same random-weight model, timed
round-robin (one run of each path per round, after a warm-up of each) so that drift in the
machine's speed falls on all of them alike:

* ``forward`` — one batched forward pass, no graph;
* ``forward_backward`` — one batched forward and one backward of the summed GradNorm loss
  Σ_i KL(u ‖ p_i): every parameter's gradient *summed over the batch* — the yardstick;
* ``per_layer_hooks`` — per-image ‖∇_θ ℓ‖₁ of every parameter tensor θ (``norms=("l1",)``) from one
  batched forward + backward, each layer's per-sample gradient rebuilt in the backward from its
  input and back-propagated signal (:func:`ood_lib.layer_gradients.layer_grad_norms`,
  ``method="hooks"``, ``--chunk`` images per pass; Linear by its outer-product closed form);
* ``per_layer_hooks_both`` — the same with ‖∇_θ ℓ‖₂² as well;
* ``per_layer_vmap`` — the plain ``torch.func`` path, ``vmap(grad(·))`` in chunks of ``--chunk``;
* ``batch1_loop`` — one image at a time, ``loss.backward()`` through the whole network, the norms of
  every ``.grad`` (timed on ``--loop-images`` images, reported per image).

Prints the median and the spread (min–max) of milliseconds per image over the repeats, and each
median's ratio to ``forward_backward``; ``--out`` writes the table as CSV.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ood_lib.cost import LAYER_CHUNK
from ood_lib.features import resolve_device
from ood_lib.layer_gradients import layer_grad_norms
from ood_lib.models import build_model

SHAPES = {"resnet20": (3, 32, 32), "densenet_bc100": (3, 32, 32), "mnist_cnn": (1, 28, 28)}


def forward_backward(model: torch.nn.Module, x: torch.Tensor) -> None:
    """One batched forward and backward of Σ_i KL(u ‖ p_i) (up to a constant): every ``.grad``."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        (-F.log_softmax(model(x), dim=-1).mean(dim=-1)).sum().backward()


def paths(model: torch.nn.Module, x: torch.Tensor, loop_images: int, chunk: int) -> dict[str, tuple]:
    """``{name: (callable, images it covers)}``."""
    def forward():
        with torch.inference_mode():
            model(x)

    n = len(x)
    return {
        "forward": (forward, n),
        "forward_backward": (lambda: forward_backward(model, x), n),
        "per_layer_hooks": (lambda: layer_grad_norms(model, x, method="hooks", chunk_size=chunk, norms=("l1",)), n),
        "per_layer_hooks_both": (lambda: layer_grad_norms(model, x, method="hooks", chunk_size=chunk), n),
        "per_layer_vmap": (lambda: layer_grad_norms(model, x, method="vmap", chunk_size=chunk), n),
        "batch1_loop": (lambda: layer_grad_norms(model, x[:loop_images], method="loop"), min(n, loop_images)),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: torch.nn.Module, x: torch.Tensor, repeats: int, loop_images: int, chunk: int) -> pd.DataFrame:
    """Milliseconds per image of every path: median, min and max over ``repeats`` round-robin rounds."""
    dev = x.device
    fns = paths(model, x, loop_images, chunk)
    for fn, _ in fns.values():  # warm-up
        fn()
    sync(dev)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, (fn, _) in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(dev)
            times[k].append(time.perf_counter() - t0)
    rows = [{"path": k, "images_timed": m, "ms_per_image": 1e3 * statistics.median(times[k]) / m,
             "ms_min": 1e3 * min(times[k]) / m, "ms_max": 1e3 * max(times[k]) / m, "repeats": repeats}
            for k, (_, m) in fns.items()]
    df = pd.DataFrame(rows)
    fb = float(df.set_index("path").ms_per_image["forward_backward"])
    df["ratio_to_forward_backward"] = df.ms_per_image / fb
    return df


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
    print(f"{a.model}, batch {a.batch} (chunks of {a.chunk}), device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{a.repeats} round-robin repeats\n")
    t = measure(model, x, a.repeats, a.loop_images, a.chunk).assign(model=a.model, batch=a.batch, chunk=a.chunk,
                                                                    device=str(dev))
    print(t[["path", "images_timed", "ms_per_image", "ms_min", "ms_max", "ratio_to_forward_backward"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ms = t.set_index("path").ms_per_image
    print(f"\nbatch-1 loop / per-layer hooks: {ms['batch1_loop'] / ms['per_layer_hooks']:.1f}x   "
          f"plain torch.func / per-layer hooks: {ms['per_layer_vmap'] / ms['per_layer_hooks']:.2f}x")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        t.to_csv(a.out, index=False)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
