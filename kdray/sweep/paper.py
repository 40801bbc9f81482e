"""The paper's experiments, as data: every table and figure of "What's Left After
Distillation?" that trains models, with five seeds each (``sweeps/full_paper.py`` runs them).

| experiment (paper)  | dataset                         | teacher -> student          | T                  | alpha |
| Table 5, Fig. 1     | svhn                            | resnet56 -> resnet20 (*)    | 2-10               | 0.8   |
| Table 5, Fig. 1     | cifar10                         | resnet56 -> resnet20        | 2-10               | 0.8   |
| Table 5             | tinyimagenet                    | resnet50 -> resnet18        | 2-10               | 0.8   |
| Tables 1, 6, 7      | cifar100                        | resnet56 -> resnet20        | 2-10, 20, 30, 40   | 0.8   |
|                     |                                 |                             | 2-10               | 0.6   |
| Tables 1, 6         | cifar100                        | densenet169 -> densenet121  | 2-10, 20, 30, 40   | 0.8   |
| Tables 1, 6         | imagenet                        | resnet50 -> resnet18        | 2-10, 20, 30, 40   | 0.8   |
| Tables 1, 6         | imagenet                        | vit_base -> tiny_vit        | 2-10, 20, 30, 40   | 0.8   |
| Tables 2, 8         | celeba-smiling, -eyeglasses     | resnet50 -> resnet18        | 1-10, 20, 30, 40   | 0.8   |
| Tables 2, 9         | trifeature-shape, -texture      | resnet20 -> lenet5          | 1-10, 20, 30, 40   | 0.8   |
| Table 3             | hatexplain                      | bert_base -> distilbert     | 1-10               | 0.8   |

(*) SVHN: the text and Fig. 1 say ResNet-56/ResNet-20; Table 5's header says ResNet-50/18.
850 runs in all: 60 teachers, 60 non-distilled students, 730 distilled students.
"""

from __future__ import annotations

from kdray.sweep.grid import Experiment

SEEDS = (0, 1, 2, 3, 4)
T_2_10 = tuple(float(t) for t in range(2, 11))
T_1_10 = tuple(float(t) for t in range(1, 11))
HIGH = (20.0, 30.0, 40.0)


def _exp(name: str, datasets: tuple[str, ...], pair: tuple[str, str], temperatures,
         alphas=(0.8,)) -> Experiment:
    return Experiment(name=name, datasets=datasets, pairs=(pair,), temperatures=tuple(temperatures),
                      alphas=alphas, seeds=SEEDS)


EXPERIMENTS: list[Experiment] = [
    _exp("table5-svhn", ("svhn",), ("resnet56", "resnet20"), T_2_10),
    _exp("table5-cifar10", ("cifar10",), ("resnet56", "resnet20"), T_2_10),
    _exp("table5-tinyimagenet", ("tinyimagenet",), ("resnet50", "resnet18"), T_2_10),
    _exp("table1-cifar100-resnet", ("cifar100",), ("resnet56", "resnet20"), T_2_10 + HIGH),
    _exp("table7-cifar100-alpha0.6", ("cifar100",), ("resnet56", "resnet20"), T_2_10, alphas=(0.6,)),
    _exp("table1-cifar100-densenet", ("cifar100",), ("densenet169", "densenet121"), T_2_10 + HIGH),
    _exp("table1-imagenet-resnet", ("imagenet",), ("resnet50", "resnet18"), T_2_10 + HIGH),
    _exp("table1-imagenet-vit", ("imagenet",), ("vit_base", "tiny_vit"), T_2_10 + HIGH),
    _exp("table2-celeba", ("celeba-smiling", "celeba-eyeglasses"), ("resnet50", "resnet18"),
         T_1_10 + HIGH),
    _exp("table2-trifeature", ("trifeature-shape", "trifeature-texture"), ("resnet20", "lenet5"),
         T_1_10 + HIGH),
    _exp("table3-hatexplain", ("hatexplain",), ("bert_base", "distilbert"), T_1_10),
]


def high_temperature_extension(experiments: list[Experiment]) -> list[Experiment]:
    """The appendix's extension: T = 20, 30, 40 for every experiment the paper ran only up to
    T = 10 (teachers and NDS are the same runs, so only new DS runs train)."""
    return [e.replace(name=f"{e.name}-high-T", temperatures=HIGH)
            for e in experiments if max(e.temperatures) <= 10]
