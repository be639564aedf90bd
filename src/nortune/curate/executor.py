"""Run datatrove pipelines on the executor the recipe names (local processes, Slurm or Ray).

One setting (``curate.executor``) serves curate and decontam. Distribution is datatrove's:
this module only maps the setting onto its executors, chains the stages of a job, and waits
until the last one has finished before the driver reads the per-task outputs.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from nortune.config import ConfigError, ExecutorSection

# datatrove's tasks re-add a default loguru handler; loguru takes its default level from here
# (read when loguru is first imported, here and in every worker process, which inherit it).
os.environ.setdefault("LOGURU_LEVEL", "WARNING")


def _quiet_logs() -> None:
    """datatrove logs every step at INFO to stderr; nortune keeps WARNING and above there."""
    from datatrove.utils.logging import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def _local_executor():
    from datatrove.executor import LocalPipelineExecutor

    class QuietLocalExecutor(LocalPipelineExecutor):
        """datatrove's local executor, silent on this terminal: a task's exception reaches the driver
        (a bad-input error is then nortune's one line, a bug keeps its traceback) without datatrove
        first logging it with its own traceback. The task logs are removed with the work folder anyway."""

        def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
            from datatrove.utils.logging import logger

            logger.disable("datatrove")
            try:
                return super()._run_for_rank(rank, local_rank, node_rank)
            finally:
                logger.enable("datatrove")

    return QuietLocalExecutor


def worker_count(cfg: ExecutorSection) -> int:
    """Tasks per parallel stage: the configured number, or every core here for the local default."""
    return cfg.workers or max(len(os.sched_getaffinity(0)), 1)


def run_stages(cfg: ExecutorSection, stages: list[tuple[str, list[Any], int]], logs: Path) -> None:
    """Run ``(name, pipeline steps, tasks)`` stages in order on the configured executor; block until done."""
    _quiet_logs()
    previous = None
    executors = []
    for name, pipeline, tasks in stages:
        logging_dir = str(logs / name)
        if cfg.type == "local":
            from nortune.children import preload_forkservers

            preload_forkservers()  # each pool worker ends when nortune does, kill -9 included
            executor = _local_executor()(pipeline, tasks=tasks, workers=min(tasks, worker_count(cfg)),
                                         logging_dir=logging_dir, skip_completed=False)
            executor.run()  # local stages run one after another in this process
            _quiet_logs()  # a task run in this process replaced the handlers
            continue
        if cfg.type == "slurm":
            from datatrove.executor import SlurmPipelineExecutor

            if shutil.which("sbatch") is None:
                raise ConfigError("curate.executor.type: slurm, but there is no sbatch on this machine's PATH")

            executor = SlurmPipelineExecutor(
                pipeline, tasks=tasks, time=cfg.time, partition=cfg.partition, cpus_per_task=cfg.cpus_per_task,
                mem_per_cpu_gb=cfg.mem_per_cpu_gb, job_name=f"nortune-{name}", logging_dir=logging_dir,
                sbatch_args=dict(cfg.sbatch_args), depends=previous, skip_completed=False,
                venv_path=os.environ.get("VIRTUAL_ENV"))
        else:
            from datatrove.executor import RayPipelineExecutor

            _ray_init(cfg)
            executor = RayPipelineExecutor(pipeline, tasks=tasks, workers=worker_count(cfg), depends=previous,
                                           logging_dir=logging_dir, skip_completed=False)
        previous = executor
        executors.append(executor)
    if executors:
        executors[-1].run()  # launches its dependencies first
        _wait(executors)


def _ray_init(cfg: ExecutorSection) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("curate.executor.type: ray needs the ray package (pip install 'ray>=2.40')") from None

    if not ray.is_initialized():
        ray.init(address=cfg.address, include_dashboard=False, log_to_driver=False)


def _wait(executors: list[Any], poll_s: float = 30.0) -> None:
    """Slurm returns once the jobs are queued; the driver waits for every task of every stage."""
    while True:
        missing = sum(len(e.get_incomplete_ranks(range(e.world_size), skip_completed=True)) for e in executors)
        if not missing:
            return
        time.sleep(poll_s)
