"""Every ``KDRAY_*`` environment variable kdray reads or sets: what it does and its default.

docs/cli.md lists them (``python -m kdray.cli_docs``); a test fails when a ``KDRAY_*`` name
appears in kdray/, sweeps/, benchmarks/ or cluster/ but not here. ``internal``: set by kdray's
own cluster files or tests, not meant to be set by hand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    default: str
    does: str
    internal: bool = False


VARIABLES = {
    "KDRAY_DATA_DIR": Variable(
        "~/.cache/kdray/data",
        "Where raw datasets live on a node; a command's --data-dir overrides it."),
    "KDRAY_IMAGENET_DIR": Variable(
        "<data dir>/imagenet",
        "Where the ImageNet train/ and val/ class folders are."),
    "KDRAY_CUDA_GRAPH": Variable(
        "1",
        "0, false, off or no: train eagerly on CUDA, without capturing the step in a CUDA "
        "graph, in every trial (python -m kdray.trial --no-cuda-graph: one command)."),
    "KDRAY_PROGRESS_INTERVAL": Variable(
        "30",
        "Seconds between a sweep's progress lines when stdout is not a terminal "
        "(--progress-interval overrides it); a bad value is refused before any work."),
    "KDRAY_TEACHER_LOGITS_MB": Variable(
        "1024",
        "Largest teacher-logits table (MiB) a DS cohort records for later cohorts of its "
        "teacher to replay; 0 records none. A bad value is refused before any work."),
    "KDRAY_WANDB_KEY_SSM": Variable(
        "unset",
        "On a cluster's head: the AWS SSM parameter holding the W&B API key, read into the "
        "driver's environment only (cluster/aws.yaml sets it)."),
    "KDRAY_COMMIT": Variable(
        "unset (git, else the installed package's)",
        "The code commit recorded in each run.json (an image built from a commit)."),
    "KDRAY_JOIN_TIMEOUT_S": Variable(
        "300",
        "cluster/slurm.sbatch: seconds the job's Ray nodes may take to join."),
    "KDRAY_LAUNCHER_CONFIG": Variable(
        "~/ray_bootstrap_config.yaml",
        "The cluster launcher config a sweep reads on a head node (a test cluster's).",
        internal=True),
    "KDRAY_SRC": Variable(
        "$HOME/src/kdray",
        "cluster/onprem.yaml: where each machine's copy of the project is.", internal=True),
    "KDRAY_CRASH_AFTER_EPOCH": Variable(
        "unset", "Tests: crash a trial after an epoch (tests/faults.py).", internal=True),
    "KDRAY_TEST_MACHINE": Variable(
        "unset", "Tests: a fake machine's folder (tests/launcher.py).", internal=True),
    "KDRAY_TEST_TMP_BASE": Variable(
        "$RAY_TMPDIR, else /tmp", "Tests: where test clusters keep their files.",
        internal=True),
}
