"""Weights & Biases tracking: one W&B run per trial.

A trial's run: project (default ``kdray``), group = dataset and pair
(e.g. ``cifar100/resnet56-resnet20``), job_type = role, name = run_id, config = the spec,
tags ``T=…`` and ``alpha=…`` for DS runs. It logs per-epoch loss and accuracy, the final test
accuracy and the per-class accuracy as a ``wandb.Table``.

Mode: ``online``, ``offline`` or ``disabled``, from the flag, else ``$WANDB_MODE``, else
``offline`` when no API key is configured (``$WANDB_API_KEY`` or a ``wandb login`` entry in
``~/.netrc``) and ``online`` when one is. The key is read by wandb from the environment; kdray
never copies it into a config, the store or a log.

On a cluster head the key can come from AWS Systems Manager: with ``$KDRAY_WANDB_KEY_SSM``
naming a SecureString parameter (``cluster/aws.yaml`` sets it), :func:`resolve_mode` reads it
into this process's environment only, so it is never in a file on the node or in the repo.
"""

from __future__ import annotations

import netrc
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from kdray.spec import RunSpec

MODES = ("online", "offline", "disabled")
SSM_ENV = "KDRAY_WANDB_KEY_SSM"


def key_from_ssm() -> bool:
    """Set ``$WANDB_API_KEY`` (this process only) from the SSM SecureString parameter named by
    ``$KDRAY_WANDB_KEY_SSM``, unless a key is already set; True when it did."""
    name = os.environ.get(SSM_ENV)
    if not name or os.environ.get("WANDB_API_KEY"):
        return False
    try:
        import boto3

        value = boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except Exception as e:  # noqa: BLE001 - no key means offline, said once
        print(f"W&B: no API key from SSM parameter {name!r} ({type(e).__name__}); "
              f"W&B runs offline unless a key is set", file=sys.stderr)
        return False
    os.environ["WANDB_API_KEY"] = value.strip()
    return True


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(flag: str | None = None) -> str:
    """The W&B mode: the flag, else $WANDB_MODE, else online iff an API key is configured."""
    if flag != "disabled":
        key_from_ssm()
    mode = flag or os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")
    if mode == "dryrun":  # wandb's old name for offline
        mode = "offline"
    if mode not in MODES:
        src = "--wandb-mode" if flag else "$WANDB_MODE"
        raise ValueError(f"{src}: {mode!r} is not one of {MODES}")
    return mode


@dataclass(frozen=True)
class WandbConfig:
    """Where and how trials log: picklable, so Ray ships it to every trial."""

    mode: str = "offline"
    project: str = "kdray"
    entity: str | None = None
    dir: str | None = None  # absolute; offline runs land in {dir}/wandb/offline-run-*

    def env(self) -> dict[str, str]:
        """Environment of the process that creates the runs (Ray's W&B callback reads
        ``WANDB_MODE`` from it to decide whether it needs an API key)."""
        env = {"WANDB_MODE": self.mode, "WANDB_SILENT": "true"}
        if self.dir:
            env["WANDB_DIR"] = self.dir
        return env


def default_dir(store) -> str:
    """Where W&B writes by default: ``{store}/wandb`` for a local store, ``./wandb`` otherwise."""
    return os.path.join(store.root, "wandb") if store.is_local else os.path.abspath("wandb")


def default_group(spec: RunSpec) -> str:
    if spec.role == "ds":
        return f"{spec.dataset}/{spec.teacher_arch}-{spec.arch}"
    return f"{spec.dataset}/{spec.arch}"


def tags(spec: RunSpec) -> list[str]:
    out = [spec.role]
    if spec.role == "ds":
        out += [f"T={spec.temperature:g}", f"alpha={spec.alpha:g}"]
    return out


def init_kwargs(spec: RunSpec, config: WandbConfig, group: str | None = None) -> dict[str, Any]:
    """``wandb.init`` arguments of a trial's run (the same standalone and under Ray Tune)."""
    return dict(project=config.project, entity=config.entity, group=group or default_group(spec),
                job_type=spec.role, name=spec.run_id, id=wandb_id(spec.run_id), resume="allow",
                config=spec.to_dict(), tags=tags(spec), dir=config.dir, mode=config.mode)


def epoch_log(metrics: Mapping[str, float]) -> dict[str, float]:
    """What a trial logs after each epoch."""
    return {"epoch": metrics["epoch"], "train/loss": metrics["loss"],
            "train/accuracy": metrics["train_accuracy"], "lr": metrics["lr"],
            "epoch_seconds": metrics["epoch_seconds"]}


def final_log(test_accuracy: float, per_class: Sequence[float | None],
              n_per_class: Sequence[int] | None = None) -> dict[str, Any]:
    """What a trial logs at the end: test accuracy and the per-class accuracy as a wandb.Table."""
    import wandb

    n_per_class = list(n_per_class) if n_per_class is not None else [None] * len(per_class)
    table = wandb.Table(columns=["class", "accuracy", "n_test"],
                        data=[[c, a, None if n is None else int(n)]
                              for c, (a, n) in enumerate(zip(per_class, n_per_class))])
    return {"test/accuracy": test_accuracy, "test/per_class_accuracy": table}


class Tracker:
    """A standalone trial's W&B run (``python -m kdray.trial``), or nothing when disabled."""

    def __init__(self, spec: RunSpec, config: WandbConfig | None, group: str | None = None) -> None:
        self.run = None
        if config is None or config.mode == "disabled":
            return
        import wandb

        if config.dir:
            os.makedirs(config.dir, exist_ok=True)
        self.run = wandb.init(**init_kwargs(spec, config, group), reinit="create_new")

    def log_epoch(self, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log(epoch_log(metrics), step=int(metrics["epoch"]))

    def log_final(self, test_accuracy: float, per_class: Sequence[float | None],
                  n_per_class: Sequence[int]) -> None:
        if self.run is not None:
            self.run.log(final_log(test_accuracy, per_class, n_per_class))
            self.run.summary["test_accuracy"] = test_accuracy

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def tune_callback(config: WandbConfig, groups: Mapping[str, str]):
    """Ray Tune callback: one W&B run per trial, logged from the driver (Ray's
    ``WandbLoggerCallback``), so only the head node needs network access and an API key."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    class KdrayWandbCallback(WandbLoggerCallback):
        def log_trial_start(self, trial) -> None:
            spec = RunSpec.from_dict(trial.config["spec"])
            kwargs = init_kwargs(spec, config, groups.get(spec.run_id))
            self._start_logging_actor(trial, ["config", "done"], allow_val_change=True, **kwargs)

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            if "loss" in result:
                log = epoch_log(result)
            elif "test_accuracy" in result:
                log = final_log(result["test_accuracy"], result["per_class_accuracy"],
                                result.get("per_class_n"))
            else:
                return
            super().log_trial_result(iteration, trial,
                                     {**log, "training_iteration": result["training_iteration"]})

    if config.dir:
        os.makedirs(config.dir, exist_ok=True)
    return KdrayWandbCallback(project=config.project, log_config=False)


def wandb_id(run_id: str) -> str:
    """W&B run ids may not contain '.', so 'a0.8' becomes 'a0_8'."""
    return run_id.replace(".", "_")
