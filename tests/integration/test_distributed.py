"""`nortune train --gpus 2` as two real CPU processes (gloo) through accelerate launch, on tiny models.

The launched command and accelerate config are the ones a GPU user gets; `train.device: cpu`
is the only difference. accelerate runs the FSDP config as DDP on CPU (docs/train.md), so the
FSDP2-specific parts (sharded state gathered back, PiSSA broadcast) run under torch's own
`fully_shard` on a CPU mesh in `test_fsdp2_gather_and_pissa_broadcast_on_cpu`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import REPO, WATCH_DEV, logits, write_recipe
from nortune.adapters import attach_adapter
from nortune.config import load_recipe
from nortune.plan import build_plan
from nortune.runs import Options
from nortune.train import run as train_run

pytestmark = pytest.mark.slow
OVERRIDE = "tiny fixture data; the gate itself is tested in test_train.py"
# fp32; measured max |difference| between the 2-process and 1-process adapters: 3.2e-7 (Gemma 3), 5.7e-7 (Gemma 4).
ATOL = 1e-5
# One global batch of 2: two processes with 1 each, or one process with 2. No NEFTune (its noise
# comes from each rank's own generator), so the two must agree to float rounding.
SETTINGS = {"train": {"max_steps": 4, "save_steps": 2, "neftune_noise_alpha": None, "merge": True,
                      "device": "cpu"}}

# Started in every launched process (PYTHONPATH): rank 1 records any write into the train folder
# outside checkpoints/ (the Trainer writes each rank's RNG state there by design), and can crash
# at a given optimizer step.
SITECUSTOMIZE = textwrap.dedent('''
    import io, os
    if os.environ.get("RANK") == "1":
        guard = os.environ.get("NORTUNE_TEST_GUARD")
        if guard:
            def _writes(path):
                path = os.path.abspath(os.fsdecode(path))
                return path.startswith(guard) and not path.startswith(os.path.join(guard, "checkpoints"))
            def _record(path):
                with _open(os.environ["NORTUNE_TEST_GUARD_LOG"], "a") as log:
                    log.write(os.fspath(path) + "\\n")
            _open = io.open
            def guarded_open(file, mode="r", *args, **kwargs):
                if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and _writes(file):
                    _record(file)
                return _open(file, mode, *args, **kwargs)
            io.open = guarded_open
            import builtins
            builtins.open = guarded_open
            for name in ("replace", "rename", "unlink", "mkdir", "rmdir"):
                def wrap(real):
                    def guarded(path, *args, **kwargs):
                        if isinstance(path, (str, bytes, os.PathLike)) and _writes(path):
                            _record(path)
                        return real(path, *args, **kwargs)
                    return guarded
                setattr(os, name, wrap(getattr(os, name)))
        crash_at = int(os.environ.get("NORTUNE_TEST_CRASH_AT_STEP", "0"))
        if crash_at:
            import torch
            real_step = torch.optim.AdamW.step
            calls = [0]
            def step(self, *args, **kwargs):
                calls[0] += 1
                if calls[0] == crash_at:
                    raise RuntimeError(f"injected crash on rank 1 at optimizer step {crash_at}")
                return real_step(self, *args, **kwargs)
            torch.optim.AdamW.step = step
        count_to = os.environ.get("NORTUNE_TEST_COUNT_STEPS")
        if count_to:
            import atexit
            import torch
            real_step, counted = torch.optim.AdamW.step, [0]
            def counting(self, *args, **kwargs):
                counted[0] += 1
                return real_step(self, *args, **kwargs)
            torch.optim.AdamW.step = counting
            def report(write=io.open):
                with write(count_to, "w") as out:
                    out.write(str(counted[0]))
            atexit.register(report)
''')


def _recipe_file(folder: Path, model: Path, **sections) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    merged = {k: dict(v) for k, v in SETTINGS.items()}
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    return write_recipe(folder / "recipe.yaml", model, folder / "runs", **merged)


def _launch(recipe: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    hooks = recipe.parent / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    stage = load_recipe(recipe).run_dir / "train"
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join([str(hooks), str(REPO / "src")]),
                "NORTUNE_TEST_GUARD": str(stage), "NORTUNE_TEST_GUARD_LOG": str(recipe.parent / "rank1_writes.txt"),
                **(env or {})}
    command = [sys.executable, "-m", "nortune.cli", "train", str(recipe), "--gpus", "2",
               "--allow-contaminated", OVERRIDE, "train.batch_size=1", *extra]
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)


def _adapters(stage: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(stage / name / "adapter_model.safetensors")
            for name in ("adapter_init", "adapter", "adapter_lora")}


def _ids() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(3, 300, (2, 24))


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, tiny_gemma3, tiny_gemma4):
    """One uninterrupted 2-process run per model (shared: the resume test compares with Gemma 3's)."""
    runs = {}
    for name, model in (("gemma3", tiny_gemma3), ("gemma4", tiny_gemma4)):
        recipe = _recipe_file(tmp_path_factory.mktemp(f"two-{name}"), model)
        done = _launch(recipe)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
        runs[name] = (recipe, model, done)
    return runs


@pytest.mark.parametrize("name", ["gemma3", "gemma4"])
def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path, two_process_runs, name):
    recipe_path, model, done = two_process_runs[name]
    assert "accelerate.commands.launch" in done.stderr and "--num_processes 2" in done.stderr
    two = load_recipe(recipe_path)
    stage2 = two.run_dir / "train"
    manifest = json.loads((stage2 / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["device"] == "cpu" and manifest["metrics"]["steps"] == 4
    assert manifest["pissa_tensors_broadcast"] == 12  # 2 sliding layers x (q, v) x (residual W, A, B)
    # Only rank 0 wrote the run folder: rank 1 recorded no write, and the log has one line per step.
    assert not (recipe_path.parent / "rank1_writes.txt").exists()
    assert len((stage2 / "log.jsonl").read_text().splitlines()) == 4
    assert not (stage2 / "checkpoints").exists()

    one = load_recipe(_recipe_file(tmp_path, model, train={"batch_size": 2}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs: LAPACK's SVD may round differently with other thread counts
    try:
        train_run(one, Options(allow_contaminated=OVERRIDE))
    finally:
        torch.set_num_threads(threads)
    stage1 = one.run_dir / "train"
    a, b = _adapters(stage1), _adapters(stage2)
    assert all(torch.equal(a["adapter_init"][k], b["adapter_init"][k]) for k in a["adapter_init"])
    for kind in ("adapter", "adapter_lora"):
        assert a[kind].keys() == b[kind].keys()
        assert all(torch.allclose(a[kind][k], b[kind][k], atol=ATOL, rtol=0) for k in a[kind]), kind
    moved = max((b["adapter"][k] - b["adapter_init"][k]).abs().max().item() for k in b["adapter"])
    assert moved > 100 * ATOL  # the runs trained, so agreeing means something

    # The 2-process outputs load in one process and give the single-process model's logits.
    from peft import PeftModel

    ids = _ids()
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    residual = attach_adapter(base, one, build_plan(base.config, one))
    residual.load_adapter(str(stage2 / "adapter"), adapter_name="trained")
    residual.set_adapter("trained")
    expected = logits(residual, ids)
    merged1 = logits(AutoModelForCausalLM.from_pretrained(stage1 / "merged", dtype=torch.float32), ids)
    merged2 = logits(AutoModelForCausalLM.from_pretrained(stage2 / "merged", dtype=torch.float32), ids)
    converted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                                          stage2 / "adapter_lora")
    for got in (merged2, logits(converted, ids)):
        assert torch.allclose(got, expected, atol=ATOL)
    assert torch.allclose(merged2, merged1, atol=1e-4)
    untouched = logits(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), ids)
    assert not torch.allclose(untouched, expected, atol=1e-3)


def test_a_crashed_rank_fails_the_stage_and_resume_equals_an_uninterrupted_run(tmp_path, two_process_runs):
    straight, model, _ = two_process_runs["gemma3"]
    recipe_path = _recipe_file(tmp_path, model)
    stage = load_recipe(recipe_path).run_dir / "train"
    crashed = _launch(recipe_path, env={"NORTUNE_TEST_CRASH_AT_STEP": "3"})  # after checkpoint-2
    assert crashed.returncode == 1
    assert "injected crash on rank 1 at optimizer step 3" in crashed.stderr
    assert "nortune: train failed: a training process exited with status" in crashed.stderr
    assert not (stage / "manifest.json").exists()
    assert json.loads((stage / "failed.json").read_text())["launcher_exit_status"] != 0
    assert (stage / "checkpoints" / "checkpoint-2").is_dir()

    resumed = _launch(recipe_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["resumed_from"].endswith("checkpoint-2") and not (stage / "failed.json").exists()
    a = _adapters(load_recipe(straight).run_dir / "train")["adapter"]
    b = _adapters(stage)["adapter"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def test_fsdp2_gather_and_pissa_broadcast_on_cpu(tmp_path, tiny_gemma3):
    """torch's FSDP2 on a 2-process CPU mesh: what accelerate does with the FSDP config on GPUs."""
    recipe = _recipe_file(tmp_path, tiny_gemma3, adapter={"svd": "fast", "svd_niter": 2})
    out = tmp_path / "fsdp2.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(Path(__file__).parent / "fsdp2_cpu_check.py"), str(recipe), str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]
    result = json.loads(out.read_text())
    assert result["ranks_differed_before_broadcast"] and result["sent"] > 0
    assert result["ranks_equal_after_broadcast"]
    assert result["sharded"]  # parameters really were DTensor shards
    assert result["adapter_moved"] > 1e-3  # two AdamW steps at lr 1e-2: the gathered state is a trained one
    assert result["max_state_difference"] <= 1e-6
    assert result["max_logit_difference"] <= ATOL


def test_gpu_memory_benchmark_runs_its_several_process_part(tiny_gemma3):
    """benchmarks/gpu_memory.py's N-process part, on CPU processes: what a lent 2-GPU machine runs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_memory.py"), "--model", str(tiny_gemma3),
                           "--steps", "2", "--processes", "2", "--device", "cpu"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]
    assert "--num_processes 2" in done.stdout  # through nortune train --gpus 2, not a home-made loop
    figures = json.loads(done.stdout.strip().splitlines()[-1])["processes"]
    assert figures["processes"] == 2 and figures["steps"] == 2 and figures["tokens_per_s"] > 0
    assert figures["per_rank"] is None and figures["estimate_without_overhead_gib"] > 0  # no GPU here


def test_the_watch_stops_every_rank_at_the_same_step(tmp_path, english_gemma3, norwegian_chats):
    """train.watch under --gpus 2: rank 0's scores decide, and rank 1 takes exactly as many optimizer steps."""
    texts = {"nb": str(WATCH_DEV / "nb.txt"), "en": str(WATCH_DEV / "en.txt")}
    recipe_path = _recipe_file(tmp_path, english_gemma3, train={
        "data": str(norwegian_chats), "lr": 3e-3, "max_steps": 40, "save_steps": 100, "logging_steps": 5,
        "merge": False, "watch": {"texts": texts, "every_steps": 5}})
    counted = tmp_path / "rank1_steps.txt"
    done = _launch(recipe_path, env={"NORTUNE_TEST_COUNT_STEPS": str(counted)})
    assert done.returncode == 0, done.stderr[-6000:]
    stage = load_recipe(recipe_path).run_dir / "train"
    manifest = json.loads((stage / "manifest.json").read_text())
    watch = manifest["watch"]
    assert manifest["processes"] == 2 and watch["stopped_early"]
    assert watch["stop_reason"].startswith("forgetting: en +")
    assert manifest["metrics"]["steps"] == watch["stopped_at_step"] < 40
    assert int(counted.read_text()) == watch["stopped_at_step"]  # rank 1 stopped at the same step
    assert 0 < watch["best_step"] < watch["stopped_at_step"] and watch["kept"].startswith("checkpoint-")
    assert not (recipe_path.parent / "rank1_writes.txt").exists()  # the watch wrote on rank 0 only
