"""The paper's Trifeature experiment (Table 2's Trifeature columns, Table 9) on one laptop.

    python sweeps/trifeature_paper.py                                  # shape label: 60 runs
    python sweeps/trifeature_paper.py --temperatures 20 30 40          # + Table 9's high T
    python sweeps/trifeature_paper.py --datasets trifeature-texture    # Table 9's texture label

ResNet-20 teacher, LeNet-5 non-distilled (NDS) and distilled students (DS, T = 1, 2, ..., 10,
alpha = 0.8), 5 seeds; label ``shape`` (or ``texture``), fairness w.r.t. ``color`` and
``texture`` (``shape`` for the texture label). ``--temperatures 20 30 40`` adds the appendix's
high temperatures: the teachers and NDS are the same runs, so only the 15 new DS runs train
(5 cohorts of 3), and they run no teacher: each replays the teacher logits its seed's cohort
of the study recorded in the store (``kdray/trial/teacher_logits.py``). The analysis prints the tables, then the paper's numbers beside kdray's and
the paper's claims judged by rules fixed before any run (``kdray/analysis/claims.py``).

The recipe is the paper's (Appendix C): SGD, momentum 0.9, lr 0.1, weight decay 1e-3, batch
64, random crop (4 px padding) and horizontal flip, lr / 10 at 30 %, 60 % and 90 % of the
epochs, 100 epochs; and the DS loss is the paper's eq. (6) as printed,
``alpha * KD + (1 - alpha) * CE`` with the KD term a cross-entropy (KL) of the soft targets at
temperature T, **without** the T^2 factor of Hinton et al. that kdray adds by default
(``kd_t_squared: False`` below; teachers and NDS have no KD term and are the same runs either
way). It deviates in two things only, both for the time bound (the shape study in at most 20x
the first run of ``sweeps/quick.py`` on the same machine):

- **image size 24 px** (the paper: 224 px). kdray renders each stimulus at 224 px and
  area-averages it down, so it is the same stimulus. 224 px images have (224/24)^2 = 87x the
  pixels; at 16 px the crop's 4 px padding is a quarter of the image and a LeNet-5 NDS ended
  at 59 % test accuracy after 60 epochs (seed 0, 6,000 images).
- **data: 3,000 training images** (3 per combination of shape, texture and colour; the
  original renders 10,000 in all and the paper does not say how it split them) and **30,000
  test images** (30 per combination), so that the sampling noise of EOD/DPD, a max - min over
  ten groups, is small (the analysis prints its bootstrap half-width).

How the recipe was chosen, from stage-1 runs only (``python benchmarks/trifeature_convergence.py``
prints a run's test accuracy per epoch): the rule was a teacher at >= 99 % test accuracy and
an NDS whose test accuracy changes by less than 0.5 points over the last 20 % of its epochs,
among the candidates that fit the time bound by the throughput measured on the 2-core machine
(24 px, one thread: ResNet-20 671 img/s, LeNet-5 9,397 img/s, a cohort of 10 DS 671 img/s;
32 px: 390, 8,604, 564), i.e. about 300,000 image-epochs at 24 px or 210,000 at 32 px.
NDS probes (2,000 test images, seeds 0, 1, 2; change of test accuracy over the last 20 %):

  =========================  ====================  =====================================
  candidate                  final test acc. (%)   change (points)
  =========================  ====================  =====================================
  24 px, 6,000 x 50 epochs   98.6 / 69.6 / 78.0    0.3 / 13.8 / 2.25
  24 px, 4,000 x 75 epochs   97.8 / 10.0 / 91.6    1.1 / 0.05 (stuck at chance) / 2.05
  24 px, 3,000 x 100 epochs  92.1 / 98.8 / 96.3    1.55 / 0.3 / 0.6
  32 px, 6,000 x 35 epochs   96.9 / 97.5 / 98.0    2.1 / 0.95 / 1.35
  32 px, 3,000 x 70 epochs   89.0 / 85.1 / 96.6    1.6 / 1.35 / 2.65
  =========================  ====================  =====================================

No candidate meets the NDS rule for every seed: with the paper's lr 0.1, LeNet-5 (no batch
normalisation) barely learns for the first 30 % of the epochs and some seeds never recover.
The candidates were ranked by the number of seeds that meet it, then by the mean change; that
picks 24 px, 3,000 images, 100 epochs (one seed of three converged; the paper's epoch count).
A ResNet-20 teacher at 24 px reached 100 % test accuracy by epoch 15 (6,000 images, seed 0).
The rule and the ranking were fixed before stage 2 ran and before any fairness number of
this recipe existed. README ("The paper's Trifeature experiment") has what the study printed,
its time beside the quick study's, and the verdicts.

How the DS loss was chosen (stage 2), after the first full run: that run used kdray's default
KD term (T^2-scaled) and left 37 of its 49 DS students at chance (their loss flat from the
first epoch at T >= 2; 48 min 39 s, 2-core machine, 2026-12-03; README has its numbers). Its
rule had checked teachers and NDS only. A rule for the DS was then written down before any
probe: the seed-0 teacher of that run, a DS cohort at T = 1, 2, 4, 7, 10 (alpha 0.8, the
recipe above), test accuracy every 10 epochs; a candidate passes when no run diverges and
every DS ends at >= 90 % test accuracy. Candidates in a fixed order, the first that passes
taken: (A) the paper's eq. (6) as printed, without T^2; (B) T^2 kept with lr 0.01 for every
role (a deviation from Appendix C). ``python benchmarks/trifeature_convergence.py --roles ds
--temperatures 1 2 4 7 10 --no-kd-t-squared --teacher-store STORE --epochs 100
--eval-every 10`` (24 px, 33 per combination, 30 test per combination) printed for
A final test accuracies 99.14 / 99.15 / 99.61 / 99.69 / 99.68 % and changes over the last
20 % of 0.15 / 0.11 / 0.03 / 0.03 / 0.01 points: A passed, B was not probed. No fairness
number of either candidate was looked at before the choice. One known weakness stays: the
stage-1 rule passes an NDS stuck at chance (its accuracy does not change); the analysis names
such runs and keeps them out of every number ("Collapsed runs" in tables.md, docs/claims.md).

The texture label (``--datasets trifeature-texture``) runs with the same recipe, which does not
learn it: a texture repeats every 10 px at 224 px, so at 24 px each pixel averages about one
period (``benchmarks/trifeature_resolution.py``). By the same stage-1 rules, teacher probes at
24, 32 and 48 px failed (81.10, 83.65, 89.25 %); at 64 px the teacher passed (99.70 %) but the
NDS did not (seeds 0, 1 at chance, seed 2 at 31.30 % and still moving), so no texture recipe is
chosen; README ("The texture label") has the probes. That candidate's rule (the teacher rule,
and one NDS seed of three meeting the NDS rule) was written down before its NDS probes; one
condition was added while they ran, after seeing seed 0 at chance for 11 epochs and before any
ended: an NDS at chance does not count. It only makes the rule harder to meet; without it the
candidate would have passed on two NDS that never learned. Two more candidates with the paper's
100 epochs, 64 px with 3,000 or 6,000 images, and their rule (the same, epochs 80 to 100) were
written down before any of their probes: all six NDS probes ended at chance (10.00 %), so no
teacher was probed; of twelve NDS probes at 32, 40, 48 and 56 px (100 epochs, 6,000 images,
rules written down before them, AMD EPYC), eleven ended at chance and one (40 px) at 63.65 %
still moving. No image size probed (24-64 px) meets both rules. The paper's lr 0.1 kills
LeNet-5's ReLU units (``benchmarks/trifeature_convergence.py`` prints the units alive), sooner
at larger images but also at 32 px, where kdray's LeNet-5 is the original. A texture recipe
seems to need what this reproduction does not deviate in: a lower lr for LeNet-5. A probe for
information only (it chooses nothing): the 64 px NDS with lr 0.01 and 35 epochs reached 86.45,
92.05 and 94.75 % (seeds 0, 1, 2), two of them meeting the NDS rule.
"""

import sys

from kdray.sweep.cli import sweep_main
from kdray.sweep.grid import Experiment

DATA = {"image_size": 24, "per_combination": 33, "test_per_combination": 30}
EXPERIMENTS = [
    Experiment(
        name="trifeature resnet20/lenet5 (paper, 24 px)",
        datasets=("trifeature-shape", "trifeature-texture"),
        pairs=(("resnet20", "lenet5"),),
        temperatures=tuple(float(t) for t in range(1, 11)),
        alphas=(0.8,),
        seeds=(0, 1, 2, 3, 4),
        # the paper's: SGD lr 0.1, milestones 30/60/90, batch 64, crop+flip; eq. (6) as printed
        recipe={"epochs": 100, "kd_t_squared": False},
        data=DATA,
        controls=True,  # one control per seed at alpha 0.8 (docs/claims.md, C9)
    ),
]

if __name__ == "__main__":
    sys.exit(sweep_main(EXPERIMENTS, description=__doc__, default_datasets=("trifeature-shape",)))
