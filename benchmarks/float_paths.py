"""Does CI's second pass compute other bits than the native float path (at the machine's
threads, and at one thread as under pytest-xdist on 2 cores)? One tiny DS run per path, each in
its own process, and the SHA-256 of the student's final weights.

    python benchmarks/float_paths.py              # this CPU: native, then .ci/float_path's
    python benchmarks/float_paths.py --as AVX2    # as on an AVX2-only CPU (see below)

The run: digits at 16 px, a ResNet-20 teacher (1 epoch), then a LeNet-5 student at T = 4,
alpha = 0.8 (2 epochs), lr 0.02, seed 0. ``--as AVX2`` takes the native path of an AVX2-only
CPU to be ATen, oneDNN and MKL capped at AVX2 with the machine's threads, and the second pass
the one ``bash .ci/float_path AVX2`` prints: an emulation on this CPU, not that CPU's own
kernels.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2_NATIVE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
               "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
LOWER_KEYS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
              "OMP_NUM_THREADS")


def one_run() -> None:
    """Train the run in this process; print the path it ran on and the weights' SHA-256."""
    import torch

    sys.path.insert(0, str(ROOT))
    from kdray import RunSpec
    from kdray.data import load_dataset
    from kdray.training.loop import Trainer

    data = load_dataset("digits", {"image_size": 16})
    common = dict(dataset="digits", batch_size=64, lr=0.02, data={"image_size": 16}, seed=0)
    teacher = Trainer(RunSpec(role="teacher", arch="resnet20", epochs=1, **common), data,
                      device="cpu")
    teacher.fit()
    ds = RunSpec(role="ds", arch="lenet5", teacher_arch="resnet20", temperature=4.0, alpha=0.8,
                 epochs=2, **common)
    student = Trainer(ds, data, device="cpu", teacher=teacher.model.eval())
    student.fit()
    digest = hashlib.sha256()
    for name, tensor in sorted(student.model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    print(f"{torch.backends.cpu.get_cpu_capability()} {torch.get_num_threads()} thread(s) "
          f"{digest.hexdigest()}")


def run_on(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in LOWER_KEYS}
    out = subprocess.run([sys.executable, __file__, "--one-run"], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def second_pass_env(capability: str | None) -> dict[str, str]:
    args = ["bash", str(ROOT / ".ci" / "float_path")] + ([capability] if capability else [])
    words = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return dict(w.split("=", 1) for w in words)


def parser() -> argparse.ArgumentParser:
    sys.path.insert(0, str(ROOT))
    from kdray.cli_help import command_parser, description_of

    p = command_parser("python benchmarks/float_paths.py", description_of(__doc__))
    p.add_argument("--as", dest="capability", choices=["AVX2"],
                   help="emulate the native path of a CPU of this capability")
    p.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    return p


def main() -> int:
    args = parser().parse_args()
    if args.one_run:
        one_run()
        return 0
    native_env = AVX2_NATIVE if args.capability else {}
    paths = {"native": native_env,  # the machine's threads, as a serial pytest runs
             "native, 1 thread": {**native_env, "OMP_NUM_THREADS": "1"},  # as under pytest -n 2
             "second pass": second_pass_env(args.capability)}
    digests = {}
    for name, env in paths.items():
        line = run_on(env)
        digests[name] = line.split()[-1]
        print(f"{name:<17} {' '.join(f'{k}={v}' for k, v in env.items()) or '(as is)'}")
        print(f"{'':<17} {line}")
    same = [n for n in ("native", "native, 1 thread") if digests[n] == digests["second pass"]]
    print("the second pass's weights: " + (f"IDENTICAL to {', '.join(same)}'s" if same else
                                           "differ from both native paths'"))
    return 1 if same else 0


if __name__ == "__main__":
    sys.exit(main())
