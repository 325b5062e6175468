"""Asking for a device: ``auto`` picks, a GPU that is not there is one readable error, not a torch traceback.

This machine may have no GPU at all, so GPUs are made present or absent with
``monkeypatch`` on torch's own availability checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from keditlab.models import ModelLoadError, load_model
from keditlab.models.loader import resolve_device

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_and_cpu(no_gpu):
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == "cpu"
    assert resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_names_the_fix(no_gpu, device):
    with pytest.raises(ModelLoadError) as info:
        resolve_device(device)
    message = str(info.value)
    assert f"device '{device}' asks for a CUDA GPU, but torch sees none" in message
    assert "Fix: set the device to 'auto'" in message and "'cpu'" in message and "run.device" in message


def test_a_cpu_only_torch_is_named(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ModelLoadError, match="is a CPU-only build"):
        resolve_device("cuda")


def test_cuda_index_out_of_range(one_gpu):
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ModelLoadError) as info:
        resolve_device("cuda:1")
    message = str(info.value)
    assert "asks for CUDA GPU number 1, but this machine has 1 GPU (cuda:0)" in message
    assert "'auto' or 'cpu'" in message


def test_index_out_of_range_with_several_gpus(one_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ModelLoadError, match=r"has 2 GPUs \(cuda:0 \.\. cuda:1\)"):
        resolve_device("cuda:2")


def test_mps_without_apple_silicon(no_gpu):
    with pytest.raises(ModelLoadError, match=r"asks for Apple's Metal GPU, but torch sees none.*Fix: set the device to 'auto'"):
        resolve_device("mps")


def test_a_word_torch_does_not_know():
    with pytest.raises(ModelLoadError, match=r"unknown device 'gpu'; known devices: auto, cpu, cuda, cuda:N"):
        resolve_device("gpu")


def test_load_model_fails_before_loading_anything(no_gpu, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("weights were loaded before the device was checked")

    monkeypatch.setattr("keditlab.models.loader._load_pretrained", must_not_load)
    monkeypatch.setattr("keditlab.models.loader.ensure_embedded_cache", must_not_load)
    with pytest.raises(ModelLoadError, match="asks for a CUDA GPU"):
        load_model("smollm2-135m", device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cli_run_on_a_missing_gpu_is_one_line(tmp_path):
    spec = tmp_path / "gpu.yaml"
    spec.write_text(
        "keditlab: 1\nrun: {device: 'cuda:1'}\nedits:\n  - {prompt: The sky is, subject: sky, target: green}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "keditlab", "run", str(spec), "--out", str(tmp_path / "runs")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "keditlab run: error: device 'cuda:1' asks for a CUDA GPU, but torch sees none" in result.stderr
    assert "Fix: set the device to 'auto'" in result.stderr
    assert not (tmp_path / "runs").exists()
