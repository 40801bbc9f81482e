"""A real mini-study on one laptop: Trifeature (shape) at 16 px, ResNet-20 teacher, LeNet-5 student.

    python sweeps/quick.py                           # 25 runs on CPU (~3 min), then the tables
    python sweeps/quick.py --temperatures 1 2 4 8    # only the new distilled students train
    python sweeps/quick.py --dry-run                 # the plan; nothing trains

5 teachers, 5 NDS, 15 DS (T = 1, 2, 4; alpha 0.8) for 5 epochs on a local Ray, then the
analysis's tables; complete runs are skipped. The recipe: docs/recipes.md; every flag and
KDRAY_* variable: docs/cli.md.
"""

import sys

from kdray.sweep.cli import Script
from kdray.sweep.grid import Experiment

EXPERIMENTS = [
    Experiment(
        name="trifeature-shape resnet20/lenet5 (quick)",
        datasets=("trifeature-shape",),
        pairs=(("resnet20", "lenet5"),),
        temperatures=(1.0, 2.0, 4.0),
        alphas=(0.8,),
        seeds=(0, 1, 2, 3, 4),
        # a laptop recipe that converges in 5 epochs: AdamW at lr 1e-3 (weight decay: the
        # family's 1e-3), lr / 10 after epoch 4, batch 16 (250 steps an epoch), and no
        # augmentation (a 4 px crop of a 16 px stimulus slows LeNet-5 down several-fold)
        recipe={"epochs": 5, "optimizer": "adamw", "lr": 1e-3, "lr_milestones": (4,),
                "batch_size": 16, "augmentation": "none"},
        # 16 px stimuli rendered at 224 px and area-averaged; 4,000 train / 1,000 test images
        data={"image_size": 16, "per_combination": 5, "test_per_combination": 1},
    ),
]

SCRIPT = Script("sweeps/quick.py", EXPERIMENTS, description=__doc__)

if __name__ == "__main__":
    sys.exit(SCRIPT.main())
