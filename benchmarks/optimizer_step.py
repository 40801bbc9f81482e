"""One optimiser step, fused kernels against PyTorch's default implementation, side by side.

    python benchmarks/optimizer_step.py           # CPU (one thread), and CUDA when present
    python benchmarks/optimizer_step.py --tiny    # a few steps, to check it runs

``kdray.training.step.build_optimizer`` makes fused SGD and AdamW on CPU and CUDA. This times
``optimizer.step()`` alone (gradients set once, the same parameter groups as a run's) for
the architectures of the quick study and the CIFAR pair, with each recipe's optimiser,
and prints microseconds per step for both implementations and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kdray import RunSpec  # noqa: E402
from kdray.cli_help import command_parser, description_of  # noqa: E402
from kdray.models import build_model  # noqa: E402
from kdray.training.step import build_optimizer  # noqa: E402

CASES = (("lenet5", 3, 16, "adamw"), ("resnet20", 3, 16, "adamw"),
         ("resnet20", 100, 32, "sgd"), ("resnet56", 100, 32, "sgd"))


def step_microseconds(optimizer: torch.optim.Optimizer, steps: int, device: str) -> float:
    for _ in range(max(1, steps // 10)):  # warm-up: state allocated, kernels loaded
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e6


def bench(arch: str, classes: int, size: int, opt: str, device: str, steps: int) -> None:
    spec = RunSpec(dataset="digits", role="nds", arch=arch, optimizer=opt,
                   lr=1e-3 if opt == "adamw" else 0.1)
    times = {}
    for name in ("default", "fused"):
        torch.manual_seed(0)
        model = build_model(arch, classes, image_size=size).to(device)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        if name == "fused":
            optimizer, _ = build_optimizer(spec, model)
            assert all(g.get("fused") for g in optimizer.param_groups)
        else:  # the same groups as build_optimizer, PyTorch's default implementation
            fused, _ = build_optimizer(spec, model)
            groups = [{k: v for k, v in g.items() if k in ("params", "weight_decay")}
                      for g in fused.param_groups]
            optimizer = (torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum or 0.0)
                         if opt == "sgd" else torch.optim.AdamW(groups, lr=spec.lr))
        times[name] = step_microseconds(optimizer, steps, device)
    n = sum(p.numel() for p in model.parameters())
    print(f"{device:>5}  {arch:<9} {opt:<6} {n / 1e6:5.2f} M params:  default "
          f"{times['default']:8,.0f} us   fused {times['fused']:8,.0f} us   "
          f"ratio {times['default'] / times['fused']:.2f}x", flush=True)


def parser() -> argparse.ArgumentParser:
    p = command_parser("python benchmarks/optimizer_step.py", description_of(__doc__))
    p.add_argument("--tiny", action="store_true", help="a few steps (a check, not a measurement)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads: {args.threads} is not >= 1")
    torch.set_num_threads(args.threads)
    steps = 3 if args.tiny else 300
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        for case in CASES:
            bench(*case, device=device, steps=steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
