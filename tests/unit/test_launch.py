import sys
from pathlib import Path

import pytest
import yaml

from nortune.config import ConfigError, load_recipe
from nortune.train.launch import launch_command

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
    assert command[command.index("--main_process_port") + 1] == "0"  # one node: a free port, never a clash
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


def _option(command, flag):
    return command[command.index(flag) + 1]


def test_several_nodes_pass_through_to_accelerate():
    recipe = load_recipe("configs/norskgemma4-31b.yaml")
    commands = [launch_command(recipe, "r.yaml", [], gpus=8, nodes=2, node_rank=rank,
                               main_address="node001:29500", device="cuda") for rank in (0, 1)]
    for rank, command in enumerate(commands):
        assert _option(command, "--num_processes") == "16"  # accelerate counts processes over all nodes
        assert _option(command, "--num_machines") == "2" and _option(command, "--machine_rank") == str(rank)
        assert _option(command, "--main_process_ip") == "node001"
        assert _option(command, "--main_process_port") == "29500"
        assert _option(command, "--mixed_precision") == "bf16"
    # Apart from the node's rank the nodes run the same command.
    assert [a for a in commands[0] if a not in ("0", "1")] == [a for a in commands[1] if a not in ("0", "1")]


def test_node_options_are_checked():
    recipe = load_recipe("configs/norskgemma4-31b.yaml")
    with pytest.raises(ConfigError, match="needs --main-address"):
        launch_command(recipe, "r.yaml", [], gpus=2, nodes=2)
    with pytest.raises(ConfigError, match="--node-rank must be between 0 and"):
        launch_command(recipe, "r.yaml", [], gpus=2, nodes=2, node_rank=2, main_address="h:1")
    for bad in ("node001", "node001:http", ":29500", "node001:70000"):
        with pytest.raises(ConfigError, match="expected HOST:PORT"):
            launch_command(recipe, "r.yaml", [], gpus=2, nodes=2, node_rank=1, main_address=bad)


def test_the_device_setting_changes_only_the_precision_flag():
    recipe = load_recipe("configs/norskgemma4-31b.yaml")
    # precision auto: bf16 on GPUs, fp32 on CPU (adapters.uses_bf16 decides for the trainer too)
    cpu = launch_command(load_recipe("configs/norskgemma4-31b.yaml", ["train.device=cpu", "train.precision=auto"]),
                         "r.yaml", [], gpus=2)
    gpu = launch_command(load_recipe("configs/norskgemma4-31b.yaml", ["train.device=cuda", "train.precision=auto"]),
                         "r.yaml", [], gpus=2)
    differ = [(a, b) for a, b in zip(cpu, gpu) if a != b]
    assert differ == [("no", "bf16")] and len(cpu) == len(gpu)  # same launcher, same accelerate config
    fp32 = load_recipe("configs/norskgemma4-31b.yaml", ["train.precision=fp32"])
    assert _option(launch_command(fp32, "r.yaml", [], gpus=2, device="cuda"), "--mixed_precision") == "no"
    assert _option(launch_command(recipe, "r.yaml", [], gpus=2, device="cpu"), "--mixed_precision") == (
        "bf16" if recipe.train.precision == "bf16" else "no")


def test_cli_train_launches_the_generated_command(monkeypatch, tmp_path, caplog):
    import subprocess

    from nortune.cli import main

    caplog.set_level("INFO", logger="nortune")
    seen = []
    monkeypatch.setattr(subprocess, "call", lambda command, **kwargs: seen.append(command) or 0)
    args = ["train", "configs/norskgemma4-31b.yaml", "train.device=cuda", "--gpus", "4", "--nodes", "3",
            "--node-rank", "2", "--main-address", "10.0.0.1:6000"]
    assert main(args) == 0
    (command,) = seen
    assert _option(command, "--num_processes") == "12" and _option(command, "--machine_rank") == "2"
    assert _option(command, "--main_process_ip") == "10.0.0.1" and _option(command, "--main_process_port") == "6000"
    assert command[command.index("nortune.cli"):] == ["nortune.cli", "train", "configs/norskgemma4-31b.yaml",
                                                       "train.device=cuda"]
    assert "launching:" in caplog.text


def test_a_failed_launch_fails_the_stage_without_a_manifest(monkeypatch, tmp_path, capsys):
    import json
    import subprocess

    from nortune.cli import main

    run_dir = tmp_path / "runs"
    stage = run_dir / "norskgemma4-31b" / "train"
    stage.mkdir(parents=True)
    (stage / "manifest.json").write_text("{}")  # an older run's: it must not stand beside a failed one
    monkeypatch.setattr(subprocess, "call", lambda command, **kwargs: 1)
    assert main(["train", "configs/norskgemma4-31b.yaml", f"runs_dir={run_dir}", "--gpus", "2"]) == 1
    assert "nortune: train failed: a training process exited with status 1" in capsys.readouterr().err
    assert not (stage / "manifest.json").exists()
    assert json.loads((stage / "failed.json").read_text())["launcher_exit_status"] == 1


@pytest.mark.slow  # runs the Slurm script's launch on every node
def test_the_documented_slurm_script_gives_each_node_its_launch_command(tmp_path):
    """docs/train.sbatch under fake srun/scontrol: two nodes, each running the real CLI (launch replaced)."""
    import json
    import os
    import stat
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "scontrol": "#!/bin/sh\nprintf 'gpu-a01\\ngpu-a02\\n'\n",
        # srun runs its command once per node, as Slurm would, with that node's SLURM_NODEID.
        "srun": "#!/bin/sh\nshift\nfor id in 0 1; do SLURM_NODEID=$id \"$@\" || exit 1; done\n",
        "nortune": (f"#!{sys.executable}\nimport json, subprocess, sys\n"
                    "subprocess.call = lambda command, **kwargs: print(json.dumps(command)) or 0\n"
                    "from nortune.cli import main\nsys.exit(main(sys.argv[1:]))\n"),
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-a[01-02]",
           "SLURM_NNODES": "2", "SLURM_GPUS_PER_NODE": "4"}
    done = subprocess.run(["bash", str(REPO / "docs" / "train.sbatch"), "configs/norskgemma4-31b.yaml"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    commands = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert [_option(c, "--machine_rank") for c in commands] == ["0", "1"]
    for command in commands:
        assert _option(command, "--num_processes") == "8" and _option(command, "--num_machines") == "2"
        assert _option(command, "--main_process_ip") == "gpu-a01"
        assert _option(command, "--main_process_port") == "29500"
