"""How many test predictions depend on bf16 rounding? Trained small models, on the CPU.

    python benchmarks/eval_precision.py     # ResNet-20, LeNet-5 on Trifeature, digits (~3 min)

Evaluation used to run under bf16 autocast on a GPU: logits with 8 significant bits
(spacing 0.0625 between 8 and 16), where near-ties become exact ties that ``argmax`` gives
to the lowest class index. For each trained model this prints, over its test set:

- ``rounded``: predictions that change when its fp32 logits are rounded to bf16 (the
  rounding of the output alone), and how many of those roundings made an exact tie;
- ``autocast``: predictions that change when the whole forward runs under the CPU's bf16
  autocast (closest to the old GPU evaluation: every convolution and matmul in bf16);
- whether ``Trainer.predict_all`` (now fp32, no autocast) gives exactly the fp32 argmax.
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
from kdray.data import load_dataset  # noqa: E402
from kdray.training.loop import Trainer  # noqa: E402

TRIFEATURE = {"image_size": 16, "per_combination": 5, "test_per_combination": 1}
CASES = [  # dataset, options, arch, epochs, lr
    ("trifeature-shape", TRIFEATURE, "resnet20", 1, 0.05),
    ("trifeature-shape", TRIFEATURE, "resnet20", 15, 0.05),
    ("trifeature-shape", TRIFEATURE, "lenet5", 15, 0.01),
    ("digits", {"image_size": 16}, "resnet20", 1, 0.05),
    ("digits", {"image_size": 16}, "resnet20", 15, 0.05),
]


def parser() -> argparse.ArgumentParser:
    return command_parser("python benchmarks/eval_precision.py", description_of(__doc__))


def main(argv: list[str] | None = None) -> int:
    parser().parse_args(argv)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads")
    print(f"{'model':<40} {'n test':>6} {'rounded':>8} {'ties':>5} {'autocast':>9} "
          f"{'predict_all = fp32':>19}")
    for dataset, options, arch, epochs, lr in CASES:
        t0 = time.perf_counter()
        data = load_dataset(dataset, options)
        spec = RunSpec(dataset=dataset, role="nds", arch=arch, epochs=epochs, lr=lr,
                       batch_size=64, data=options)
        trainer = Trainer(spec, data, device="cpu")
        trainer.fit()
        preds, _ = trainer.predict()
        model = trainer.model.eval()
        with torch.inference_mode():
            x = trainer._inputs(data.test.x)
            logits = torch.cat([model(x[i:i + 512]) for i in range(0, len(x), 512)]).float()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                auto = torch.cat([model(x[i:i + 512]) for i in range(0, len(x), 512)])
        fp32 = logits.argmax(-1)
        rounded = logits.bfloat16()
        top2 = rounded.float().topk(2, dim=-1).values
        changed_rounding = int((rounded.argmax(-1) != fp32).sum())
        ties = int((top2[:, 0] == top2[:, 1]).sum())
        changed_autocast = int((auto.argmax(-1) != fp32).sum())
        same = bool((torch.as_tensor(preds) == fp32).all())
        name = f"{arch} {dataset} {options.get('image_size')}px, {epochs} ep"
        print(f"{name:<40} {len(fp32):>6} {changed_rounding:>8} {ties:>5} {changed_autocast:>9} "
              f"{str(same):>19}   ({100 * float((fp32 == data.test.y).float().mean()):.1f}% acc, "
              f"{time.perf_counter() - t0:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
