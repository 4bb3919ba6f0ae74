"""Launchers: local pool stages, Slurm (through submitit) checks, arrays and dependency chains against a
fake ``sbatch``/``sinfo``, the time-limit re-submission path forced on submitit's local executor, and
clear errors before any job starts (missing sbatch, unmeetable resources, unreachable Ray)."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
import yaml

from mixlab.errors import MixlabError
from mixlab.runs.launch import Job, LaunchConfig, LaunchError, Resources, SlurmOptions, launcher_for, raise_failures
from mixlab.runs.launch.local import LocalLauncher
from tests.test_sweep import _config, reference, world  # noqa: F401  (fixtures)

submitit = pytest.importorskip("submitit")
from mixlab.runs.launch import slurm as SL  # noqa: E402

SINFO = "cpu*|32|128000|(null)|2-00:00:00\ngpu|64|512000|gpu:a100:8(S:0-1)|1-00:00:00\n"


def _exe(folder: Path, name: str, body: str) -> None:
    p = folder / name
    p.write_text("#!/bin/bash\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sinfo`` printing two partitions and an ``sbatch`` that logs its file and answers job ids 101, 102, ..."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _exe(bin_dir, "sinfo", f"cat <<'EOF'\n{SINFO}EOF\n")
    _exe(bin_dir, "srun", "exit 0\n")  # submitit looks for it to believe it is on a cluster
    _exe(bin_dir, "sbatch", f'n=$(( $(ls {tmp_path}/submitted 2>/dev/null | wc -l) + 101 ))\n'
                            f'mkdir -p {tmp_path}/submitted; cp "$1" {tmp_path}/submitted/$n.sh\n'
                            'echo "Submitted batch job $n"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def _job(name: str, **res) -> Job:
    return Job(name, sorted, ([3, 1, 2],), resources=Resources(**res))


# ---------------------------------------------------------------- local


def test_local_launcher_runs_stages_in_order_and_stops_after_a_failed_stage():
    L = LocalLauncher(workers=1)
    seen = []
    out = L.run_stages([[_job("a"), Job("b", int, ("7",))], [Job("c", max, (4, 9))]], on_done=lambda r: seen.append(r.name))
    assert [[r.value for r in s] for s in out] == [[[1, 2, 3], 7], [9]] and seen == ["a", "b", "c"]
    with pytest.raises(LaunchError, match=r"1 of 2 jobs of stage 1 failed:\n  bad: ValueError: invalid literal"):
        L.run_stages([[_job("a"), Job("bad", int, ("x",))], [Job("never", max, (1, 2))]])


@pytest.mark.slow
def test_local_pool_runs_jobs_in_two_processes():
    res = LocalLauncher(workers=2).run_stages([[Job(f"p{i}", os.getpid) for i in range(4)]])[0]
    pids = {r.value for r in res}
    assert all(r.ok for r in res) and os.getpid() not in pids and 1 <= len(pids) <= 2


# ---------------------------------------------------------------- slurm: checks before anything starts


def test_missing_sbatch_is_a_clear_error_before_any_job(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    L = launcher_for(LaunchConfig(backend="slurm"), str(tmp_path / "slurm"))
    with pytest.raises(MixlabError, match=r"`sbatch` was not found on PATH.*--slurm-local"):
        L.run_stages([[_job("a")]])
    assert not (tmp_path / "slurm").exists()


def test_sweep_command_refuses_a_missing_sbatch_before_any_work(world, tmp_path, monkeypatch, capsys):
    from mixlab.cli import main

    cfg = _config(world, tmp_path / "sw")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["sweep", str(cfg), "--backend", "slurm", "--partition", "gpu"]) == 2
    assert "`sbatch` was not found on PATH" in capsys.readouterr().err
    assert not (tmp_path / "sw").exists()  # no store, no unit folder: nothing started


@pytest.mark.parametrize("partition, res, time_min, message", [
    ("nope", {}, 60, r"no partition 'nope' \(partitions: cpu, gpu\)"),
    ("gpu", {"gpus": 16}, 60, r"--gpus 16 > 8 gpus"),
    (None, {"gpus": 1}, 60, r"the default partition cannot meet the request: --gpus 1 > 0 gpus"),
    ("cpu", {"mem_gb": 200}, 60, r"--mem-gb 200 > 125 gb"),
    ("gpu", {"cpus": 65}, 60, r"--cpus 65 > 64 cpus"),
    ("gpu", {}, 1500, r"--time 1500 > 1440 min"),
])
def test_unmeetable_slurm_requests_are_refused(fake_slurm, partition, res, time_min, message):
    L = SL.SlurmLauncher(SlurmOptions(partition=partition, time_min=time_min), fake_slurm / "slurm")
    with pytest.raises(MixlabError, match=message):
        L.run_stages([[_job("a", **res)]])
    assert not (fake_slurm / "submitted").exists()


def test_slurm_time_limits_parse():
    assert [SL.parse_time_min(t) for t in ("30", "1:30", "2:00:00", "1-12", "2-00:00:00", "infinite")] == \
        [30, 1.5, 120, 2160, 2880, None]


def test_slurm_arrays_and_dependent_chain_as_submitted(fake_slurm):
    """Train as one array, evaluate as a second array that waits for the first (afterok)."""
    opts = SlurmOptions(partition="gpu", time_min=30, array_parallelism=2, additional={"account": "lab"})
    L = SL.SlurmLauncher(opts, fake_slurm / "slurm")
    L.check([_job("t", gpus=1, cpus=4, mem_gb=16)])  # fits the gpu partition
    train = L.submit([_job(f"train-v{i}", gpus=1, cpus=4, mem_gb=16) for i in range(3)])
    evaluate = L.submit([_job("sweep-worker-0", cpus=2)], after=train)
    assert [h.job_id for h in train] == ["101_0", "101_1", "101_2"] and evaluate[0].job_id == "102"
    first, second = (fake_slurm / "submitted" / "101.sh").read_text(), (fake_slurm / "submitted" / "102.sh").read_text()
    for line in ("--array=0-2%2", "--partition=gpu", "--time=30", "--gpus-per-node=1", "--cpus-per-task=4",
                 "--mem=16GB", "--account=lab", "--signal=USR2@"):
        assert f"#SBATCH {line}" in first, (line, first)
    assert "#SBATCH --dependency=afterok:101\n" in second and "--array" not in second
    assert "dependency" not in first


# ---------------------------------------------------------------- slurm: re-submission after a time limit


def _descendants(pid: int) -> list[int]:
    out = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # exited meanwhile
        return out
    for child in children:
        out += [int(child), *_descendants(int(child))]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


@pytest.mark.slow
def test_timed_out_training_job_is_resubmitted_and_resumes_from_its_checkpoint(tmp_path):
    """submitit's local executor, the job's time-limit signal forced once its first checkpoint is on
    disk: the job is re-submitted and the run resumes from that checkpoint to the end."""
    from mixlab.mixopt.swarm import train_variant
    from tests.test_swarm import BASE

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(BASE | {"duration": {"tokens": 32768}, "checkpoint": {"every": 8}}))
    run_dir = tmp_path / "run"
    L = SL.SlurmLauncher(SlurmOptions(cluster="local", time_min=5, max_requeue=2), tmp_path / "slurm")
    (handle,) = L.submit([Job("train-tiny", train_variant, (str(cfg), str(run_dir)))])
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "step-8").is_dir():
        assert time.time() < deadline and not handle.done(), handle.stderr()
        time.sleep(0.05)
    tasks = [p for p in _descendants(handle._process.pid) if "submitit.core._submit" in _cmdline(p)]
    assert len(tasks) == 1, (tasks, handle.stderr())
    os.kill(tasks[0], signal.SIGUSR2)  # what the controller sends `signal_delay_s` before the time limit
    (res,) = SL.wait([Job("train-tiny", train_variant)], [handle], None, poll_s=0.2)
    assert res.ok, res.error
    log = handle.stderr() + handle.stdout()
    assert "this job is timed-out" in log and "Requeued job" in log, log
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["steps"] == 64, (meta, log)
    assert 8 <= meta["resumed_from"] < 64, (meta, log)  # the second attempt started from a checkpoint, not from scratch
    assert res.value["steps"] == 64 and res.value["skipped"] is False


@pytest.mark.slow
def test_sweep_through_submitit_local_executor_matches_an_uninterrupted_run(world, reference, tmp_path):
    from mixlab.runs import sweep as S
    from mixlab.runs.sweep import LauncherBackend
    from tests.test_sweep import _check_complete

    cfg = S.load_sweep_config(_config(world, tmp_path / "slurm_local"))
    launch = LaunchConfig(backend="slurm", workers=1, slurm=SlurmOptions(cluster="local", time_min=10))
    (report,) = S.run_sweep(cfg, backend=LauncherBackend(launch, str(tmp_path / "slurm")))
    assert len(report.computed) == 14 and report.owner.split(":")[1] != str(os.getpid())
    _check_complete(cfg, reference[0])
    assert list((tmp_path / "slurm").glob("*_log.err"))  # submitit's per-job logs


def test_failures_name_each_job_and_its_error():
    from mixlab.runs.launch import JobResult

    with pytest.raises(LaunchError, match=r"2 of 3 evaluation workers failed:\n  w1: ValueError: boom\n  w2: killed"):
        raise_failures([JobResult("w0", True, 1), JobResult("w1", False, error="Traceback...\nValueError: boom\n  (logs)"),
                        JobResult("w2", False, error="killed")], "evaluation workers")


# ---------------------------------------------------------------- ray: checks before anything starts


def test_unreachable_ray_address_is_a_clear_error_before_any_job():
    pytest.importorskip("ray")
    from mixlab.runs.launch.ray import RayLauncher, check_reachable
    from mixlab.runs.launch import RayOptions

    with pytest.raises(MixlabError, match=r"cannot reach the Ray cluster at 127.0.0.1:1 .*ray start --head"):
        RayLauncher(RayOptions(address="127.0.0.1:1")).run_stages([[_job("a")]])
    with pytest.raises(MixlabError, match="expected HOST:PORT"):
        check_reachable("just-a-name")
