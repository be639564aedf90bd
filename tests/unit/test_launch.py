import sys
from pathlib import Path

import pytest
import yaml

from nortune.config import ConfigError, load_recipe
from nortune.launch import launch_command

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def test_gpus_builds_an_fsdp_accelerate_launch():
    recipe = load_recipe("configs/norskgemma4-31b.yaml")
    command = launch_command(recipe, "configs/norskgemma4-31b.yaml", ["train.lr=1e-5"], gpus=4,
                             resume=True, allow_contaminated="audited by hand")
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[command.index("-m", 3) + 1:command.index("-m", 3) + 5] == [
        "nortune.cli", "train", "configs/norskgemma4-31b.yaml", "train.lr=1e-5"]
    assert "--resume" in command and command[-2:] == ["--allow-contaminated", "audited by hand"]
    config = yaml.safe_load(Path(command[command.index("--config_file") + 1]).read_text())
    assert config["distributed_type"] == "FSDP" and config["mixed_precision"] == "bf16"
    # PiSSA needs the full weights on every rank when the adapter is initialised.
    assert config["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] is False


def test_zero3_is_refused_with_pissa_and_allowed_with_plain_lora():
    pissa = load_recipe("configs/norskgemma4-31b.yaml", ["train.distributed=deepspeed_zero3"])
    with pytest.raises(ConfigError, match="deepspeed_zero3 cannot run PiSSA"):
        launch_command(pissa, "r.yaml", [], gpus=2)
    lora = load_recipe("configs/norskgemma4-31b.yaml", ["train.distributed=deepspeed_zero3", "adapter.init=lora"])
    command = launch_command(lora, "r.yaml", [], gpus=2)
    config = yaml.safe_load(Path(command[command.index("--config_file") + 1]).read_text())
    assert config["distributed_type"] == "DEEPSPEED" and config["deepspeed_config"]["zero_stage"] == 3
