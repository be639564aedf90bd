"""curate.executor type ray: datatrove's Ray executor on a local Ray instance gives the local files."""

from __future__ import annotations

import pytest

from test_curate_workers import corpus, curate_with

ray = pytest.importorskip("ray")


@pytest.mark.slow  # starts a local Ray instance and curates twice
def test_ray_executor_gives_the_same_files_as_local(tmp_path):
    pa, pb, _ = corpus(tmp_path)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the test's own local instance
    try:
        on_ray, ray_files = curate_with(tmp_path / "ray", pa, pb, {"type": "ray", "workers": 2})
    finally:
        ray.shutdown()
    local, local_files = curate_with(tmp_path / "local", pa, pb, {"type": "local", "workers": 1})
    assert ray_files == local_files and on_ray == local
    assert on_ray["dropped"]["duplicate:near"] == 1
