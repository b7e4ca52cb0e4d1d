"""`plan --train --slurm PARTITION` (utils/plan.py) end to end against a fake SLURM on this machine: the
real submitit SLURM executor writes its sbatch script and calls sbatch, sacct, srun; the fake (FAKE_SLURM,
written as sbatch, squeue, sacct, scancel and srun first on PATH) validates what a cluster would check, runs
every job detached with the environment SLURM gives a batch script and srun gives a task, and answers sacct
as SLURM does. The jobs train the runs; the tests read what the fake logged, the jobs' logs and the store."""

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from submitit.slurm.slurm import SlurmJob

from utils import plan, store

ROOT = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).with_name("fake_slurm.py")

# One SLURM: the controller and slurmd are a detached runner per submission (`sbatch --fake-run ID`). A job is
# a record jobs/<id>.json (id: "12", or "12_3" for task 3 of array 12), updated PENDING -> RUNNING ->
# COMPLETED / FAILED / CANCELLED; submissions.jsonl and calls.jsonl log what was asked of it.
COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "srun")
_FIRST_IDS = itertools.count(1000, 1000)  # a job id is never reused in a session: submitit's sacct watcher
# (one per session, SlurmJob.watcher) caches finished jobs' states by id

# 06's learning-rate study under smoke: 1 epoch of mlp_plain on 461 Fashion-MNIST images each
LR_STUDY = "mlp_plain@abl-lr-*"
LR_RUNS = ["mlp_plain@abl-lr-baseline-s0", "mlp_plain@abl-lr-baseline-s1", "mlp_plain@abl-lr-lr0.001-s0"]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """The fake SLURM's state folder; its commands first on PATH; the working directory the repository's
    (where `python -m utils.plan` runs: a job starts in the submission directory and imports utils from it).
    Afterwards, any job still running (a failed test) is killed, by the process group the fake started."""
    state, bin_dir = tmp_path / "slurm", tmp_path / "bin"
    (state / "jobs").mkdir(parents=True)
    bin_dir.mkdir()
    (state / "next_id").write_text(str(next(_FIRST_IDS)))
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    for name in COMMANDS:  # each command: the fake, told which one it is
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {name} "$@"\n')
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(ROOT)
    yield state
    for r in jobs(state):
        if not r["end"]:  # its batch script's group, then its runner's (each a session the fake started)
            runner = state / "runners" / str(r["job"])
            for pid in (r["pid"], int(runner.read_text()) if runner.exists() else None):
                if pid:
                    _kill_group(pid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPZOOM_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("MLPZOOM_RESULTS", str(tmp_path / "results"))
    return tmp_path


def submissions(state: Path) -> list[dict]:
    """What sbatch accepted, in order: {"job": id, "options": its #SBATCH options, "cwd": ...}."""
    path = state / "submissions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def calls(state: Path, prog: str) -> list[list[str]]:
    path = state / "calls.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [c["argv"] for c in lines if c["prog"] == prog]


def jobs(state: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((state / "jobs").glob("*.json"))]


def load_job(state: Path, job: int) -> dict:
    return json.loads((state / "jobs" / f"{job}.json").read_text())


def ended(state: Path, timeout_s: float = 60) -> list[dict]:
    """The jobs once every one has ended (a job's result file comes before its process exits)."""
    deadline = time.time() + timeout_s
    while not all(r["end"] for r in jobs(state)) and time.time() < deadline:
        time.sleep(0.05)
    return jobs(state)


def test_fake_slurm_runs_an_array_with_the_environment_submitit_reads(slurm, tmp_path):
    """The fake itself, on an array of 3 tasks 2 at a time, as submitit writes arrays: ids, logs per task,
    the job environment submitit's SlurmJobEnvironment reads, and sacct's lines as submitit parses them."""
    script = tmp_path / "array.sh"
    script.write_text("#!/bin/bash\n#SBATCH --array=0-2%2\n#SBATCH --partition=gpu\n"
                      f"#SBATCH --gpus-per-node=1\n#SBATCH --output={tmp_path}/%A_%a_0_log.out\n"
                      "#SBATCH --open-mode=append\n\n"
                      f"srun --unbuffered --output {tmp_path}/%A_%a_%t_log.out env\n")
    first = int((slurm / "next_id").read_text())
    submitted = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, check=True)
    assert submitted.stdout == f"Submitted batch job {first}\n"
    assert [(r["id"], r["raw"], r["state"]) for r in ended(slurm)] == [
        (f"{first}_{i}", first + i, "COMPLETED") for i in range(3)]
    for i in range(3):
        log = (tmp_path / f"{first}_{i}_0_log.out").read_text()
        env = dict(line.split("=", 1) for line in log.splitlines() if "=" in line)
        assert {k: env[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                                    "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
                                    "SLURM_JOB_NODELIST", "SLURM_JOB_PARTITION", "CUDA_VISIBLE_DEVICES")} == {
            "SLURM_JOB_ID": str(first + i), "SLURM_ARRAY_JOB_ID": str(first), "SLURM_ARRAY_TASK_ID": str(i),
            "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
            "SLURM_JOB_NODELIST": "fakenode01", "SLURM_JOB_PARTITION": "gpu", "CUDA_VISIBLE_DEVICES": "0"}
    # sacct as submitit calls it, read by submitit's own parser: every task, the steps skipped
    out = subprocess.run(["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", str(first)],
                         capture_output=True, check=True).stdout
    info = SlurmJob.watcher.read_info(out)
    assert {k: v["State"] for k, v in info.items()} == {f"{first}_{i}": "COMPLETED" for i in range(3)}
    refused = subprocess.run(["sbatch", "--partition=cpu", str(script)], capture_output=True, text=True)
    assert refused.returncode == 1 and "Requested node configuration is not available" in refused.stderr
    # a failing job, and one cancelled while it runs (squeue shows it running first)
    for name, command in (("fails", "exit 3"), ("sleeps", "sleep 60")):
        (tmp_path / name).write_text(f"#!/bin/bash\n#SBATCH --output={tmp_path}/%x-%j.out\n{command}\n")
        subprocess.run(["sbatch", "-J", name, str(tmp_path / name)], capture_output=True, check=True)
    fails, sleeps = first + 3, first + 4
    while load_job(slurm, sleeps)["state"] != "RUNNING":
        time.sleep(0.05)
    queue = subprocess.run(["squeue", "-h", "-j", str(sleeps), "-o", "%i %P %j %t"], capture_output=True,
                           text=True, check=True)
    assert queue.stdout == f"{sleeps} cpu sleeps R\n"
    subprocess.run(["scancel", str(sleeps)], check=True)
    ended(slurm)
    out = subprocess.run(["sacct", "-o", "JobID,State,ExitCode", "-P", "-j", f"{fails},{sleeps}"],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "JobID|State|ExitCode"
    info = SlurmJob.watcher.read_info(out)
    assert {k: (v["State"], v["ExitCode"]) for k, v in info.items()} == {
        str(fails): ("FAILED", "3:0"), str(sleeps): (f"CANCELLED by {os.getuid()}", "0:15")}


def test_slurm_jobs_train_each_run_of_the_plan_once(slurm, roots, capsys):
    """train_ahead(slurm="cpu"): 3 runs dealt to 2 workers are 2 SLURM jobs (not an array; a CPU profile's:
    no GPU asked for) that train them and report back through submitit's result files; a second call
    submits nothing."""
    logs = roots / "logs"
    done = plan.train_ahead("smoke", ["06"], workers=2, slurm="cpu", pattern=LR_STUDY, log_dir=logs)
    assert "wave 1: 3 runs on 2 worker(s)" in capsys.readouterr().out
    assert sorted(done.run) == LR_RUNS and (done.dataset == "fashion-mnist").all()
    assert (done.outcome == "stored").all() and (done.seconds > 0).all()
    assert done.groupby("worker").size().to_dict() == {0: 2, 1: 1}  # equal runs: 2 to worker 0, 1 to worker 1
    assert all(store.is_stored(run, "fashion-mnist", "smoke") for run in LR_RUNS)
    asked = store.requests("smoke")  # one line per get_or_train, written in the job (store.context: worker)
    assert sorted(asked.run) == LR_RUNS and asked.trained.all() and (asked.notebook == "plan").all()
    by_worker = lambda t: sorted(zip(t.run, t.worker, strict=True))
    assert by_worker(asked) == by_worker(done)
    assert "worker" not in store.context  # nothing trained in this process

    subs = submissions(slurm)
    ids = [s["job"] for s in subs]
    assert len(ids) == 2 and ids[1] == ids[0] + 1
    for s in subs:  # what plan.executor asks SLURM for
        assert s["cwd"] == str(ROOT) and s["options"] == {
            "job-name": "mlpzoom-plan", "partition": "cpu", "nodes": "1",
            "ntasks-per-node": "1", "time": "1440", "signal": "USR2@90", "wckey": "submitit",
            "open-mode": "append", "output": f"{logs}/%j_0_log.out",
            "error": f"{logs}/%j_0_log.err"}
    assert [r["state"] for r in ended(slurm)] == ["COMPLETED", "COMPLETED"]  # after the results: exits
    for worker, job in enumerate(ids):  # worker i is the i-th job submitted
        out, err = (logs / f"{job}_0_log.out").read_text(), (logs / f"{job}_0_log.err").read_text()
        assert f"Starting with JobEnvironment(job_id={job}, " in out  # submitit's SlurmJobEnvironment
        assert "local_rank=0(1), node=0(1), global_rank=0(1)" in out and "epoch 1/1" in err
        assert (logs / f"{job}_0_result.pkl").exists()
        for run in done.run[done.worker == worker]:
            assert out.count(f"[worker {worker}] fashion-mnist/{run}: stored") == 1
        assert SlurmJob(logs, str(job)).get_info() == {"JobID": str(job), "State": "COMPLETED",
                                                       "NodeList": "fakenode01"}
    polls = calls(slurm, "sacct")  # submitit polled the jobs' state while waiting for their results
    assert polls and all(p[:3] == ["-o", "JobID,State,NodeList", "--parsable2"] for p in polls)
    assert not calls(slurm, "scancel")  # the batch script: one step, the job's python under srun
    assert calls(slurm, "srun") == [["--unbuffered", "--output", f"{logs}/%j_%t_log.out", "--error",
                                     f"{logs}/%j_%t_log.err", sys.executable, "-u", "-m",
                                     "submitit.core._submit", str(logs)]] * 2

    again = plan.train_ahead("smoke", ["06"], workers=2, slurm="cpu", pattern=LR_STUDY, log_dir=logs)
    assert again.empty and len(submissions(slurm)) == 2 and len(store.requests("smoke")) == 3


def test_the_command_line_trains_through_slurm_and_reports_a_refused_submission(slurm, roots, capsys,
                                                                                 monkeypatch):
    """`python -m utils.plan ... --train --slurm gpu` (its main, in this process) trains through one job
    (--workers default: 1); a CUDA profile is planned and submitted from a machine without CUDA (a login
    node) as GPU jobs with SLURM_CPUS cores each, and sbatch's refusals (an unknown partition, GPUs on a CPU
    partition) are the command's error."""
    run = "mlp_plain@abl-lr-baseline-s0"
    with monkeypatch.context() as login_node, pytest.raises(SystemExit) as refused:
        login_node.setattr(torch.cuda, "is_available", lambda: False)
        login_node.setattr(torch.cuda, "device_count", lambda: 0)
        plan.main(["--profile", "full", "--only", "06", "--train", "--slurm", "nosuch", "--run", run])
    assert refused.value.code == 2 and "invalid partition specified: nosuch" in capsys.readouterr().err
    with monkeypatch.context() as login_node, pytest.raises(SystemExit) as refused:
        login_node.setattr(torch.cuda, "is_available", lambda: False)
        login_node.setattr(torch.cuda, "device_count", lambda: 0)
        plan.main(["--profile", "full", "--only", "06", "--train", "--slurm", "cpu", "--run", run])
    assert refused.value.code == 2 and "node configuration is not available" in capsys.readouterr().err
    script = Path(calls(slurm, "sbatch")[-1][-1]).read_text()  # the batch script submitit wrote
    assert "#SBATCH --gpus-per-node=1" in script and f"#SBATCH --cpus-per-task={plan.SLURM_CPUS}" in script
    assert "#SBATCH --time=1440" in script and not submissions(slurm)

    argv = ["--profile", "smoke", "--only", "06", "--train", "--slurm", "gpu", "--run", run]
    assert plan.main(argv) == 0
    printed = capsys.readouterr().out
    assert "wave 1: 1 runs on 1 worker(s)" in printed
    assert re.search(rf"{re.escape(run)}\s+fashion-mnist\s+stored\s+[\d.]+\s+0\n", printed)
    (sub,) = submissions(slurm)
    default_logs = roots / "checkpoints" / "smoke" / "plan-logs"
    assert sub["options"]["partition"] == "gpu" and sub["options"]["output"] == f"{default_logs}/%j_0_log.out"
    assert store.is_stored(run, "fashion-mnist", "smoke") and len(store.requests("smoke")) == 1
    assert [r["state"] for r in ended(slurm)] == ["COMPLETED"]
    assert plan.main(argv) == 0 and "nothing to train: every run is stored" in capsys.readouterr().out
    assert len(submissions(slurm)) == 1
