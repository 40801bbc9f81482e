"""CUDA hygiene (``kdray.training.gpu``) on a machine without CUDA: every function is safe to call and
never starts CUDA; the pure parts (allocator setting, memory fraction, switches) by value;
the bf16 teacher cast gives bitwise autocast's logits; the trial and sweep plumbing."""

import copy

import pytest
import torch
import torch.nn as nn

from kdray import trial
from kdray.training import gpu
from kdray.models import build_model


def test_allocator_setting_is_set_unless_the_user_set_one():
    env = {}
    assert gpu.configure_allocator(env) == "expandable_segments:True"
    assert env == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    mine = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}
    assert gpu.configure_allocator(mine) == "max_split_size_mb:128"
    assert mine == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"}


def test_memory_fraction_is_the_share_less_the_context():
    gib = 2 ** 30
    assert gpu.memory_fraction(0.25, 80 * gib, gib) == pytest.approx(0.25 - 1 / 80)
    assert gpu.memory_fraction(0.5, 24 * gib, gib) == pytest.approx(0.5 - 1 / 24)
    assert gpu.memory_fraction(0.01, 16 * gib, gib) == 0.01  # never zero
    for share in (0, 1, 2, None):
        assert gpu.memory_fraction(share, 80 * gib) is None  # no GPU, or a whole card


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA behaviour")
def test_without_cuda_nothing_happens_and_cuda_never_starts(monkeypatch):
    from kdray.sweep import trainable

    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert gpu.limit_memory(0.25) is None
    assert gpu.release_cuda_memory() is False
    trainable.release_memory()
    gpu.prepare_process()
    assert not torch.cuda.is_initialized()


def test_prepare_process_sets_cublas_only_for_deterministic_trials(monkeypatch):
    monkeypatch.delenv(gpu.CUBLAS_ENV, raising=False)
    monkeypatch.delenv(gpu.ALLOC_ENV, raising=False)
    gpu.prepare_process()
    assert gpu.CUBLAS_ENV not in gpu.os.environ
    assert gpu.os.environ[gpu.ALLOC_ENV] == "expandable_segments:True"
    gpu.prepare_process(deterministic=True)
    assert gpu.os.environ[gpu.CUBLAS_ENV] == ":4096:8"


def test_determinism_switches_on_and_off(monkeypatch):
    monkeypatch.delenv(gpu.CUBLAS_ENV, raising=False)
    try:
        gpu.set_determinism(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert gpu.os.environ[gpu.CUBLAS_ENV] == ":4096:8"
    finally:
        gpu.set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark


def test_fp32_precision_turns_tf32_off_and_restores():
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    with gpu.fp32_precision():
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    with pytest.raises(RuntimeError), gpu.fp32_precision():
        raise RuntimeError("restored on errors too")
    assert (conv.fp32_precision, matmul.fp32_precision) == before


@pytest.mark.parametrize("conv", [None, "without fp32_precision"])
def test_fp32_precision_falls_back_to_allow_tf32_on_an_older_torch(monkeypatch, conv):
    """torch 2.4 (the floor) has no ``fp32_precision`` switches: the ``allow_tf32`` flags
    are turned off instead, and restored."""
    from types import SimpleNamespace

    cudnn = SimpleNamespace(allow_tf32=True)
    if conv is not None:
        cudnn.conv = SimpleNamespace()  # a cudnn.conv namespace without the new switch
    matmul = SimpleNamespace(allow_tf32=True)
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    monkeypatch.setattr(torch.backends, "cuda", SimpleNamespace(matmul=matmul))
    assert [name for _, name, _ in gpu.tf32_switches()] == ["allow_tf32", "allow_tf32"]
    with pytest.raises(RuntimeError, match="inside"), gpu.fp32_precision():
        assert (cudnn.allow_tf32, matmul.allow_tf32) == (False, False)
        assert not hasattr(matmul, "fp32_precision")  # nothing new was set
        raise RuntimeError("inside")
    assert (cudnn.allow_tf32, matmul.allow_tf32) == (True, True)


def test_batch_statistics_are_found():
    assert gpu.has_batch_statistics(build_model("resnet20", 10, image_size=16))
    assert not gpu.has_batch_statistics(build_model("lenet5", 10, image_size=16))
    assert not gpu.has_batch_statistics(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))


def test_teacher_cast_to_bf16_once_gives_autocasts_logits_bitwise():
    """What ``Trainer(teacher_bf16=True)`` relies on, under the CPU's bf16 autocast: casting
    the convolution and linear weights once rounds them exactly as autocast does per step."""
    torch.manual_seed(0)
    teacher = build_model("resnet20", 10, image_size=16).eval()
    x = torch.randn(32, 3, 16, 16)
    cast = gpu.cast_matmul_weights(copy.deepcopy(teacher), torch.bfloat16)
    assert cast.fc.weight.dtype == torch.bfloat16
    assert all(m.weight.dtype == torch.float32 for m in cast.modules()
               if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(teacher(x), cast(x))


def test_trial_flag_turns_capture_off(monkeypatch, tmp_path):
    seen = []

    def fake_run_cohort(specs, store, **kwargs):
        seen.append(kwargs["cuda_graph"])
        return trial.CohortResult({}, {})

    monkeypatch.setattr(trial, "run_cohort", fake_run_cohort)
    args = ["--store", str(tmp_path), "--dataset", "digits", "--role", "teacher",
            "--arch", "resnet20", "--wandb-mode", "disabled"]
    assert trial.main(args + ["--no-cuda-graph"]) == 0
    assert trial.main(args) == 0
    assert seen == [False, None]  # None: $KDRAY_CUDA_GRAPH, else on
