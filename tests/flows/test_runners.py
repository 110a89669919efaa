"""Ray resource requests that no node can satisfy fail at once with a message (Ray would wait forever)."""

import pytest

from instvl.flows.runners import RunnerConfig, check_resources

CPU_NODE = {"Alive": True, "Resources": {"CPU": 2.0, "memory": 1e9}}


def test_gpu_request_on_a_cpu_cluster_fails_fast(monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "nodes", lambda: [CPU_NODE, {"Alive": False, "Resources": {"GPU": 8.0}}])
    with pytest.raises(RuntimeError, match=r"no node of the Ray cluster has CPU 1 and GPU 1 .*GPU: 0"):
        check_resources(RunnerConfig(kind="ray", gpus_per_task=1))
    check_resources(RunnerConfig(kind="ray", gpus_per_task=1, autoscaling=True))  # nodes may come
    check_resources(RunnerConfig(kind="ray", cpus_per_task=2))
    with pytest.raises(RuntimeError, match="CPU 4"):
        check_resources(RunnerConfig(kind="ray", cpus_per_task=4))
    check_resources(RunnerConfig(kind="local", gpus_per_task=1))  # threads: nothing to ask Ray
