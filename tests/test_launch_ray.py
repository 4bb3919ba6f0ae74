"""Ray backend: a local Ray cluster inside the test runs a sweep whose worker is SIGKILLed mid-task;
Ray retries the task and the sweep ends with every result present exactly once, equal to an
uninterrupted run. Resource requests no node can meet are refused before anything is submitted."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from mixlab.errors import MixlabError  # noqa: E402
from mixlab.runs import store as St  # noqa: E402
from mixlab.runs import sweep as S  # noqa: E402
from mixlab.runs.launch import Job, LaunchConfig, RayOptions, Resources  # noqa: E402
from mixlab.runs.sweep import LauncherBackend  # noqa: E402
from mixlab.runs.launch.ray import RayLauncher  # noqa: E402
from tests.test_sweep import _check_complete, _config, reference, world  # noqa: E402,F401  (fixtures)


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2)
    yield
    ray.shutdown()


def test_requests_no_node_can_meet_are_refused_before_submitting(cluster):
    L = RayLauncher(RayOptions(), workers=1)
    with pytest.raises(MixlabError, match=r"job big asks 4 GPU but the largest node has 0.*Lower --cpus/--gpus"):
        L.run_stages([[Job("small", sorted, ([2, 1],)), Job("big", sorted, ([1],), resources=Resources(gpus=4))]])
    with pytest.raises(MixlabError, match=r"job wide asks 3 CPU but the largest node has 2"):
        L.check([Job("wide", sorted, ([1],), resources=Resources(cpus=3))])
    assert ray.is_initialized()  # a cluster the launcher did not start is left running


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker(cluster, world, reference, tmp_path):
    cfg = S.load_sweep_config(_config(world, tmp_path / "ray"))
    store_path = Path(cfg.out) / S.STORE_FILE
    killed: list[int] = []
    done = threading.Event()

    def kill_first_worker_mid_task() -> None:
        while not done.is_set() and not killed:
            if store_path.is_file():
                with St.Store(store_path) as store:
                    claims = store.live_claims(cfg.claim_timeout_s)
                if claims:
                    os.kill(claims[0].pid, signal.SIGKILL)
                    killed.append(claims[0].pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_worker_mid_task)
    killer.start()
    try:
        backend = LauncherBackend(LaunchConfig(backend="ray", workers=1, ray=RayOptions(max_retries=2)))
        reports = S.run_sweep(cfg, backend=backend)
    finally:
        done.set()
        killer.join()
    assert killed and killed[0] != os.getpid()
    (report,) = reports  # the retried task's report: a new process finished the sweep
    assert report.owner.split(":")[1] != str(killed[0])
    events = _check_complete(cfg, reference[0])  # every result once, numbers equal to an uninterrupted run
    owners = {e["owner"].split(":")[1] for e in events if e["event"] in ("claimed", "reclaimed")}
    assert str(killed[0]) in owners and len(owners) == 2
