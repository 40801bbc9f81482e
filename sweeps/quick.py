"""A real mini-study on one laptop: Trifeature (shape) at 16 px, ResNet-20 teacher, LeNet-5 student.

Local Ray, store ./results (unless --store), W&B offline (unless a key or --wandb-mode says
otherwise): 5 teachers, 5 non-distilled students and 15 distilled students (T = 1, 2, 4;
alpha = 0.8) trained for 6 epochs on CPU, then the analysis job prints the significance
and fairness tables. Run it again and nothing trains; add a temperature
(``--temperatures 1 2 4 8``) and only the new distilled students train.

Six CPU epochs are not the paper's 100: from a near-100% teacher, a LeNet-5 distilled at
higher temperatures learns more slowly than in 100 epochs (its KD term's soft targets stay
sharp), so the trends of the paper's Tables 2 and 9 need ``sweeps/full_paper.py``.
"""

import sys

from kdray.cli import sweep_main
from kdray.grid import Experiment

EXPERIMENTS = [
    Experiment(
        name="trifeature-shape resnet20/lenet5 (quick)",
        datasets=("trifeature-shape",),
        pairs=(("resnet20", "lenet5"),),
        temperatures=(1.0, 2.0, 4.0),
        alphas=(0.8,),
        seeds=(0, 1, 2, 3, 4),
        # a laptop recipe: 6 epochs at lr 0.01 (LeNet-5 stays at chance for 8 epochs at the
        # paper's 0.1), lr / 10 after epoch 5, batch 32
        recipe={"epochs": 6, "lr": 0.01, "lr_milestones": (5,), "batch_size": 32},
        # 16 px stimuli rendered at 224 px and area-averaged; 4,000 train / 1,000 test images
        data={"image_size": 16, "per_combination": 5, "test_per_combination": 1},
    ),
]

if __name__ == "__main__":
    sys.exit(sweep_main(EXPERIMENTS, description=__doc__))
