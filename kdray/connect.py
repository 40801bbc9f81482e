"""How a process joins the services a study uses: Ray and Weights & Biases.

Shared by the sweep (``kdray/sweep/``), ``python -m kdray.trial`` and the analysis
(``kdray/analysis/``), which imports nothing else of the sweep side.

Ray (:func:`init_ray`), as a researcher expects: the running cluster if there is one
(:func:`join_cluster`, which the sweep's checks before any work use alone), else a local Ray.

- Ray already initialised in this process (a test, a sweep script calling the analysis):
  reuse it.
- ``RAY_ADDRESS`` set (``ray job submit`` sets it): connect there; a failure is an error,
  never a silent fallback to a laptop-sized local Ray.
- ``RAY_ADDRESS=local``: a Ray of this process's own, whatever else runs on the machine.
- Otherwise ``ray.init(address="auto")`` joins a cluster running on this machine (the head
  node under ``ray submit``, or ``ray start --head``), saying so with its address (a Ray
  left running by something else would be joined too), and a local Ray starts when none is.
- ``$WANDB_API_KEY`` is out of this process's environment while Ray starts
  (:func:`key_hidden`): a local Ray copies the environment into its raylet and every worker,
  which do not need the key (W&B runs are created in the driver, ``kdray/tracking.py``).

W&B's mode (:func:`resolve_mode`): ``online``, ``offline`` or ``disabled``, from the flag, else
``$WANDB_MODE``, else ``offline`` when no API key is configured (``$WANDB_API_KEY`` or a
``wandb login`` entry in ``~/.netrc``) and ``online`` when one is. The key is read by wandb
from the environment; kdray never copies it into a config, the store or a log. On a cluster
head the key can come from AWS Systems Manager: with ``$KDRAY_WANDB_KEY_SSM`` naming a
SecureString parameter (``cluster/aws.yaml`` sets it), :func:`resolve_mode` reads it into this
process's environment only, so it is never in a file on the node or in the repo. Where W&B
writes when no folder is given, for the sweep's runs and the analysis's alike:
:func:`default_dir`.
"""

from __future__ import annotations

import contextlib
import netrc
import os
import sys

MODES = ("online", "offline", "disabled")
SSM_ENV = "KDRAY_WANDB_KEY_SSM"


def join_cluster() -> str | None:
    """Join the Ray this process would use, if it runs already: ``"existing"`` (initialised
    here), ``"local"`` (``RAY_ADDRESS=local``: one started here, this machine only),
    ``"cluster"`` (``RAY_ADDRESS``, or a cluster running on this machine), or None when there
    is none (and no Ray was started). Trials' output stays in Ray's logs
    (``log_to_driver=False``)."""
    import ray

    if ray.is_initialized():
        return "existing"
    with key_hidden():  # Ray's processes do not need the W&B key
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
            return "local" if os.environ["RAY_ADDRESS"] == "local" else "cluster"
        try:
            ray.init(address="auto", log_to_driver=False)
        except ConnectionError:
            return None
    address = ray.get_runtime_context().gcs_address
    print(f"ray: joined the Ray already running on this machine ({address}); set "
          "RAY_ADDRESS=local for a Ray of this process's own", file=sys.stderr)
    return "cluster"


def init_ray() -> str:
    """Make sure Ray is initialised; returns ``"existing"``, ``"cluster"`` or ``"local"``
    (a local Ray started here when :func:`join_cluster` found none)."""
    import ray

    where = join_cluster()
    if where is not None:
        return where
    with key_hidden():
        ray.init(include_dashboard=False, log_to_driver=False)
    return "local"


@contextlib.contextmanager
def key_hidden():
    """``$WANDB_API_KEY`` out of this process's environment for the block: a local Ray started
    here (``ray.init``) copies the environment into its raylet and every worker, which do not
    need the key. W&B reads it again once it is back."""
    key = os.environ.pop("WANDB_API_KEY", None)
    try:
        yield
    finally:
        if key is not None:
            os.environ["WANDB_API_KEY"] = key


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


def default_dir(store) -> str:
    """Where W&B writes by default: ``{store}/wandb`` for a local store, ``./wandb`` otherwise."""
    return os.path.join(store.root, "wandb") if store.is_local else os.path.abspath("wandb")
