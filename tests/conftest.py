"""Shared fixtures: a local Ray for the whole session, a moto S3 server on 127.0.0.1; and the
markers that say what a test starts (``pytest --markers``), applied from its fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

import resources

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Every Ray the tests start (here and in the sweep scripts they run) is a new local one, never
# a cluster that happens to run on the machine (another checkout's tests, say).
os.environ["RAY_ADDRESS"] = "local"
RAY_TMPDIR = resources.own_ray_tmpdir()  # this process's: see tests/resources.py
resources.share_the_cores()  # under pytest-xdist: each worker its share of the threads


# ----------------------------------------------------------------------------------------
# What a test starts: markers from its fixtures, checked while it runs (tests/resources.py)
# ----------------------------------------------------------------------------------------
def pytest_configure(config):
    for name, text in resources.MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


@pytest.hookimpl(tryfirst=True)  # before xdist names each test by its group
def pytest_collection_modifyitems(config, items):
    resources.apply_markers(items)


def pytest_unconfigure(config):
    shutil.rmtree(RAY_TMPDIR, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    resources.begin(item)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    resources.end(item)
    return result


@pytest.fixture(scope="session")
def starts_cluster():
    """Asked for by every fixture that starts several Ray nodes, ssh machines or SLURM
    daemons: its tests get the ``cluster`` marker and run alone."""
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_environment(**values: str) -> dict[str, str]:
    """The environment of a sweep driver a test starts as a subprocess: this process's, with
    ``values``, less ``$WANDB_SERVICE``. wandb puts that variable into the environment of a
    process that has made a run, and a child that inherits it makes its runs in the parent's
    W&B service; a child killed there leaves them open in the parent, whose next run of the
    same id then fails ("run ID ... is in use", seen with wandb 0.31 when a killed driver's
    runs shared their ids with a later test's)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, **values}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection (a download) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _atomic_moto_writes() -> None:
    """S3 applies a conditional write (``If-None-Match``, ``If-Match``) atomically; moto 5.2.5
    checks the condition and then writes in two steps (``moto/s3/responses.py``
    ``put_object``, ``delete_object``), so two racing creates could both succeed. Serialise
    its object PUTs and DELETEs, as S3 does (kdray.lease relies on it)."""
    import functools
    import threading

    from moto.s3.responses import S3Response

    lock = threading.Lock()
    for name in ("put_object", "delete_object"):
        method = getattr(S3Response, name)
        if getattr(method, "_kdray_atomic", False):
            continue

        def locked(self, *args, _method=method, **kwargs):
            with lock:
                return _method(self, *args, **kwargs)

        functools.update_wrapper(locked, method)
        locked._kdray_atomic = True
        setattr(S3Response, name, locked)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (moto) on 127.0.0.1 for the session; yields its host:port."""
    from moto.server import ThreadedMotoServer

    _atomic_moto_writes()
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_uri(s3_endpoint):
    """A fresh bucket on the moto server, as a store URI with credentials in the userinfo."""
    import pyarrow.fs as pafs

    bucket = f"kdray-{uuid.uuid4().hex[:12]}"
    fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                           endpoint_override=f"http://{s3_endpoint}", allow_bucket_creation=True)
    fs.create_dir(bucket)
    return (f"s3://testing:testing@{bucket}/study?endpoint_override={s3_endpoint}"
            f"&scheme=http&region=us-east-1")


@pytest.fixture(params=["local", "s3"])
def store_uri(request, tmp_path):
    """Run a store test twice: on a local folder and on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_uri")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs) for every test that needs it."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One data directory for the session, so generated datasets are built once."""
    return str(tmp_path_factory.mktemp("data"))


# Small Trifeature: 1,000 train / 1,000 test images at 16 px (every combination in both).
TINY_TRIFEATURE = {"image_size": 16, "per_combination": 2, "test_per_combination": 1}

# ----------------------------------------------------------------------------------------
# Training in the tests: inside the stable region on any x86-64 CPU
# ----------------------------------------------------------------------------------------
# A spec trains bitwise alike on one machine and torch build, not across CPUs: oneDNN, MKL and
# ATen pick their kernels by instruction set (AVX-512, AVX2, ...) and by thread count, and so
# sum in another order; the last bits differ, and many steps amplify them. A recipe at the
# edge of divergence then tips over on one CPU and not on another: tiny DS runs at the paper's
# lr 0.1 with T = 4 or 8 (the KD term's gradient scales with T), taught by a 1-epoch teacher,
# went to NaN on an AMD EPYC (AVX2, no AVX-512) and on this machine under ONEDNN_MAX_CPU_ISA=AVX2
# with one thread, and trained on elsewhere. So every test that trains a CNN student uses
# STABLE_LR (its teacher too: a DS run's teacher has the same recipe), far below the edge: see
# docs/reproducibility.md for the margin measured. Tests that compare results bitwise do so
# only between two computations on the same machine (cohort vs lone, resumed vs
# uninterrupted); tests that check what a run learned use tolerances.
# `python -m pytest -m trains` runs every test that trains; CI runs the fast ones a second
# time on another float path (.ci/run).
STABLE_LR = 0.02
TINY_RECIPE = {"epochs": 1, "batch_size": 100, "lr": STABLE_LR}


@pytest.fixture(scope="session")
def digits():
    """16 px digits, in memory: the small image dataset of the training-loop tests."""
    from kdray.data import load_dataset

    return load_dataset("digits", {"image_size": 16})


@pytest.fixture(scope="session")
def digits_teacher(digits):
    """A ResNet-20 teacher trained one epoch on ``digits`` (for DS and cohort tests)."""
    from kdray import RunSpec
    from kdray.training.loop import Trainer

    spec = RunSpec(dataset="digits", role="teacher", arch="resnet20", epochs=1, batch_size=64,
                   data={"image_size": 16}, lr=STABLE_LR)
    tr = Trainer(spec, digits, device="cpu")
    tr.fit()
    return tr.model.eval()


@pytest.fixture
def dropout_arch():
    """A small conv net whose forward draws random numbers (dropout, as DistilBERT and TinyViT
    do), registered for one test only (the registry-wide model tests never see it)."""
    import torch.nn as nn

    from kdray.models import MODELS, register_model

    def dropout_net(num_classes: int, *, image_size: int, in_channels: int = 3,
                    pretrained: bool = False) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.5),
                             nn.Linear(128, num_classes))

    register_model("dropout_net", family="cnn")(dropout_net)
    yield "dropout_net"
    del MODELS["dropout_net"]
