"""``lineage validate-config``: the shipped profiles, and bad configs refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ml.cli import main
from ml.train.config import DeviceSettings, ConfigError

REPO = Path(__file__).resolve().parents[1]


def _validate(tmp_path: Path, data: dict, *extra: str) -> int:
    f = tmp_path / "run.yaml"
    f.write_text(yaml.safe_dump(data))
    return main(["validate-config", *extra, str(f)])


def test_debug_profile_is_valid(capsys):
    assert main(["validate-config", str(REPO / "configs" / "debug.yaml")]) == 0
    assert "config OK" in capsys.readouterr().out


@pytest.mark.parametrize("profile", ["base.yaml", "hpc.yaml"])
def test_gpu_profiles_valid_but_refused_without_gpu(profile, capsys):
    import torch

    path = str(REPO / "configs" / profile)
    assert main(["validate-config", "--no-hardware-check", path]) == 0
    if not torch.cuda.is_available():
        assert main(["validate-config", path]) == 1
        assert "resources.torch_device.config.device: 'cuda' asked for, but this machine has no CUDA GPU" \
            in capsys.readouterr().err


@pytest.mark.parametrize("section, message", [
    ({"ops": {"lm_checkpoint": {"config": {"train": {"batch_size": 0}}}}},
     "ops.lm_checkpoint.config.train.batch_size: Input should be greater than 0"),
    ({"resources": {"torch_device": {"config": {"precision": "fp8"}}}},
     "resources.torch_device.config.precision: Input should be 'fp32', 'bf16' or 'fp16'"),
    ({"ops": {"lm_checkpoint": {"config": {"model": {"hidden_size": 32, "num_heads": 4}}},
              "lora_adapter": {"config": {"model": {"lora": {"r": 64}}}}}},
     "ops.lora_adapter.config.model.lora.r: LoRA rank 64 is larger than the base model's hidden size 32"),
    ({"ops": {"embedding_checkpoint": {"config": {"model": {"base": "minilm", "lora": {"r": 512}}}}}},
     "lora.r (512) is larger than MiniLM's hidden size (384)"),
    ({"ops": {"relation_checkpoint": {"config": {"train": {"learning_rate": 0.1}}}}},
     "ops.relation_checkpoint.config.train.learning_rate: unknown field"),
    ({"ops": {"lm_checkpoint": {"config": {"model": {"hidden_size": 30, "num_heads": 4}}}}},
     "hidden_size (30) must be divisible by num_heads (4)"),
    ({"resources": {"torch_device": {"config": {"device": "tpu"}}}},
     "resources.torch_device.config.device: Value error, device 'tpu': expected auto, cpu, cuda or cuda:N"),
])
def test_bad_configs_are_refused_naming_the_field(tmp_path, capsys, section, message):
    assert _validate(tmp_path, section) == 1
    assert message in capsys.readouterr().err


def test_gpu_precision_without_gpu_is_refused():
    with pytest.raises(ConfigError, match="precision: 'fp16' needs a CUDA GPU"):
        DeviceSettings(device="auto", precision="fp16").check_available(cuda_available=False, cuda_count=0)
    with pytest.raises(ConfigError, match="precision: 'bf16' is a GPU profile"):
        DeviceSettings(device="auto", precision="bf16").check_available(cuda_available=False, cuda_count=0)
    with pytest.raises(ConfigError, match="'cuda:2' but only 1 CUDA device"):
        DeviceSettings(device="cuda:2").check_available(cuda_available=True, cuda_count=1)
    DeviceSettings(device="cpu", precision="bf16").check_available(cuda_available=False, cuda_count=0)  # asked for
    DeviceSettings(device="auto", precision="bf16").check_available(cuda_available=True, cuda_count=1)


def test_unreadable_yaml_is_reported(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("ops: [unclosed")
    assert main(["validate-config", str(f)]) == 1
    assert "not valid YAML" in capsys.readouterr().err
