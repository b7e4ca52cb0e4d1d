"""A fake SLURM on one machine for tests/test_plan_slurm.py: `fake_slurm.py COMMAND ARGS...`, COMMAND one of
sbatch, squeue, sacct, scancel, srun (the test puts wrappers by those names first on PATH); its state folder
is $FAKE_SLURM_STATE. A test double, not a scheduler: it validates what a cluster would check, runs every job
detached with the environment SLURM gives a batch script and srun a task, and answers sacct as SLURM does."""

import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_STATE", "."))
PARTITIONS = {"cpu": {"gpus": 0, "max_minutes": 7 * 24 * 60}, "gpu": {"gpus": 8, "max_minutes": 2 * 24 * 60}}
DEFAULT_PARTITION = "cpu"
NO_INDEX = 4294967294  # what %a expands to outside an array
# per command: options with a value, flags, short aliases (an unknown option is an error, as in SLURM)
SPECS = {
    "sbatch": ({"account", "array", "chdir", "comment", "constraint", "cpus-per-gpu", "cpus-per-task",
                "dependency", "error", "exclude", "exclusive", "gpus-per-node", "gpus-per-task", "gres",
                "job-name", "mail-type", "mail-user", "mem", "mem-per-cpu", "mem-per-gpu", "nodelist",
                "nodes", "ntasks", "ntasks-per-node", "open-mode", "output", "partition", "qos", "signal",
                "time", "wckey"},
               {"exclusive", "parsable", "requeue", "no-requeue"},
               {"-A": "account", "-a": "array", "-c": "cpus-per-task", "-D": "chdir", "-e": "error",
                "-J": "job-name", "-N": "nodes", "-n": "ntasks", "-o": "output", "-p": "partition",
                "-q": "qos", "-t": "time"}),
    "srun": ({"cpu-bind", "cpus-per-task", "error", "export", "job-name", "nodes", "ntasks",
              "ntasks-per-node", "open-mode", "output"},
             {"exclusive", "kill-on-bad-exit", "label", "overlap", "quiet", "unbuffered", "verbose"},
             {"-c": "cpus-per-task", "-e": "error", "-J": "job-name", "-l": "label", "-N": "nodes",
              "-n": "ntasks", "-o": "output", "-u": "unbuffered", "-v": "verbose"}),
    "sacct": ({"endtime", "format", "jobs", "starttime", "state", "user"},
              {"allocations", "allusers", "noheader", "parsable", "parsable2"},
              {"-E": "endtime", "-S": "starttime", "-X": "allocations", "-a": "allusers", "-j": "jobs",
               "-n": "noheader", "-o": "format", "-P": "parsable2", "-p": "parsable", "-s": "state",
               "-u": "user"}),
    "squeue": ({"format", "jobs", "partition", "states", "user"}, {"me", "noheader"},
               {"-h": "noheader", "-j": "jobs", "-o": "format", "-p": "partition", "-t": "states",
                "-u": "user"}),
    "scancel": ({"signal"}, {"batch", "full", "quiet"},
                {"-Q": "quiet", "-b": "batch", "-f": "full", "-s": "signal"}),
}


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def parse(prog, args, interleaved=False):
    """(options, positional arguments): --key=value, --key value, -k value, -kvalue, --flag; repeated -j add
    up. sbatch and srun stop at the first positional argument (the script, the command)."""
    valued, flags, short = SPECS[prog]
    opts, rest, i = {}, [], 0
    while i < len(args):
        arg, i = args[i], i + 1
        if not arg.startswith("-") or arg == "-":
            if not interleaved:
                return opts, args[i - 1:]
            rest.append(arg)
            continue
        if arg.startswith("--"):
            key, has_value, value = arg[2:].partition("=")
        elif arg[:2] in short:
            key, value = short[arg[:2]], arg[2:]
            has_value = bool(value)
        else:
            fail(f"{prog}: invalid option -- '{arg[1:]}'")
        if key not in valued and key not in flags:
            fail(f"{prog}: unrecognized option '{arg}'")
        if not has_value and key in flags:
            opts[key] = True
            continue
        if not has_value:
            if i == len(args):
                fail(f"{prog}: option '{arg}' requires an argument")
            value, i = args[i], i + 1
        opts[key] = f"{opts[key]},{value}" if key == "jobs" and key in opts else value
    return opts, rest


def minutes(text):
    """SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        h, m, s = (parts + [0, 0])[:3]
    else:
        h, m, s = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    return int(days or 0) * 1440 + h * 60 + m + s / 60


def array_indices(spec):
    """0-3%2, 1,5,7, 0-9:3 -> (indices, how many run at once)."""
    spec, _, limit = spec.partition("%")
    out = []
    for part in spec.split(","):
        bounds, _, step = part.partition(":")
        lo, _, hi = bounds.partition("-")
        out += range(int(lo), int(hi or lo) + 1, int(step or 1))
    return out, int(limit) if limit else len(out)


def gpus_per_node(opts, tasks_per_node):
    if "gpus-per-node" in opts:
        return int(opts["gpus-per-node"].rpartition(":")[2])
    if gres := re.search(r"gpu(?::[^:,]+)?:(\d+)", opts.get("gres", "")):
        return int(gres.group(1))
    return int(opts.get("gpus-per-task", "0").rpartition(":")[2]) * tasks_per_node


def node_name(i):
    return f"fakenode{i + 1:02d}"


def node_list(n):
    return node_name(0) if n == 1 else f"fakenode[01-{n:02d}]"


def expand(pattern, values):
    """An --output / --error path: %j %A %a %x %u %N %n %t %s (zero-padded as %3a) and %%."""
    def one(m):
        return "%" if m.group(2) == "%" else str(values[m.group(2)]).zfill(int(m.group(1) or 0))
    return re.sub(r"%(\d*)([%AajxuNnts])", one, pattern)


def save(record):
    path = STATE / "jobs" / f"{record['id']}.json"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def load(key):
    return json.loads((STATE / "jobs" / f"{key}.json").read_text())


def records(ids=()):
    """Every job record, or those of these ids as SLURM takes them: 12 (a job, or all tasks of array 12),
    12_3 (one task), or a task's own job id."""
    out = sorted((json.loads(p.read_text()) for p in (STATE / "jobs").glob("*.json")), key=lambda r: r["raw"])
    return [r for r in out if not ids or {r["id"], str(r["job"]), str(r["raw"])} & set(ids)]


def new_ids(n):
    fd = os.open(STATE / "next_id", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        first = int(os.read(fd, 32) or b"1000")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(first + n).encode(), 0)
    finally:
        os.close(fd)
    return first


def sbatch(argv):
    opts, rest = parse("sbatch", argv)
    if not rest:
        fail("sbatch: error: the fake sbatch reads no script from stdin")
    text = Path(rest[0]).read_text()
    if not text.startswith("#!"):
        fail("sbatch: error: This does not look like a batch script.  The first line must start with #! "
             "followed by the path to an interpreter.")
    directives = []
    for line in text.splitlines()[1:]:
        if line.startswith("#SBATCH"):
            directives += shlex.split(line[len("#SBATCH"):])
        elif line.strip() and not line.startswith("#"):
            break  # #SBATCH lines count up to the first command
    opts = {**parse("sbatch", directives)[0], **opts}  # the command line wins
    partition = opts.get("partition", DEFAULT_PARTITION)
    if partition not in PARTITIONS:
        fail(f"sbatch: error: invalid partition specified: {partition}\n"
             "sbatch: error: Batch job submission failed: Invalid partition name specified")
    nodes, per_node = int(opts.get("nodes", 1)), int(opts.get("ntasks-per-node", 1))
    gpus = gpus_per_node(opts, per_node)
    if gpus > PARTITIONS[partition]["gpus"]:
        fail("sbatch: error: Batch job submission failed: Requested node configuration is not available")
    if minutes(opts.get("time", "60")) > PARTITIONS[partition]["max_minutes"]:
        fail("sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or "
             "exceeds some limit)")
    indices, at_once = array_indices(opts["array"]) if "array" in opts else ([None], 1)
    first = new_ids(len(indices))
    script = STATE / "scripts" / f"{first}.sh"  # the script as submitted: submitit moves the file after
    script.parent.mkdir(exist_ok=True)
    script.write_text(text)
    script.chmod(0o755)
    cwd = os.path.abspath(opts.get("chdir", os.getcwd()))
    for k, index in enumerate(indices):
        save({"id": str(first) if index is None else f"{first}_{index}", "job": first, "raw": first + k,
              "index": index, "array": indices if index is not None else None, "at_once": at_once,
              "state": "PENDING", "exit": "0:0", "pid": None, "start": None, "end": None,
              "partition": partition, "name": opts.get("job-name", Path(rest[0]).name), "nodes": nodes,
              "ntasks": int(opts.get("ntasks", nodes * per_node)), "gpus": gpus,
              "cpus": int(opts.get("cpus-per-task", 1)) * per_node, "output": opts.get("output"),
              "error": opts.get("error"), "append": opts.get("open-mode") == "append", "cwd": cwd,
              "script": str(script)})
    with open(STATE / "submissions.jsonl", "a") as f:
        f.write(json.dumps({"job": first, "options": opts, "cwd": cwd}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # --export=ALL
    runner = subprocess.Popen([sys.executable, __file__, "sbatch", "--fake-run", str(first)], env=env,
                              start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    (STATE / "runners").mkdir(exist_ok=True)
    (STATE / "runners" / str(first)).write_text(str(runner.pid))
    print(first if opts.get("parsable") else f"Submitted batch job {first}")


def batch_env(r):
    """What SLURM sets for a batch script (sbatch's --export=ALL environment underneath)."""
    per_node = max(1, r["ntasks"] // r["nodes"])
    env = {**os.environ, "SLURM_JOB_ID": r["raw"], "SLURM_JOBID": r["raw"], "SLURM_JOB_NAME": r["name"],
           "SLURM_JOB_PARTITION": r["partition"], "SLURM_JOB_NUM_NODES": r["nodes"],
           "SLURM_NNODES": r["nodes"], "SLURM_JOB_NODELIST": node_list(r["nodes"]),
           "SLURM_NODELIST": node_list(r["nodes"]), "SLURM_NTASKS": r["ntasks"], "SLURM_NPROCS": r["ntasks"],
           "SLURM_NTASKS_PER_NODE": per_node,
           "SLURM_TASKS_PER_NODE": per_node if r["nodes"] == 1 else f"{per_node}(x{r['nodes']})",
           "SLURM_CPUS_ON_NODE": r["cpus"], "SLURM_JOB_CPUS_PER_NODE": r["cpus"],
           "SLURM_SUBMIT_DIR": r["cwd"], "SLURM_SUBMIT_HOST": socket.gethostname(),
           "SLURM_CLUSTER_NAME": "fake", "SLURM_NODEID": 0, "SLURM_PROCID": 0, "SLURM_LOCALID": 0,
           "SLURMD_NODENAME": node_name(0),
           "SLURM_OPEN_MODE": "a" if r["append"] else "t"}
    if r["gpus"]:
        ids = ",".join(map(str, range(r["gpus"])))
        env |= {"SLURM_GPUS_ON_NODE": r["gpus"], "SLURM_JOB_GPUS": ids, "CUDA_VISIBLE_DEVICES": ids}
    if r["index"] is not None:
        a = r["array"]
        env |= {"SLURM_ARRAY_JOB_ID": r["job"], "SLURM_ARRAY_TASK_ID": r["index"],
                "SLURM_ARRAY_TASK_COUNT": len(a), "SLURM_ARRAY_TASK_MIN": min(a),
                "SLURM_ARRAY_TASK_MAX": max(a)}
    return {k: str(v) for k, v in env.items()}


def start(r):
    """Run a job's batch script on its CPUs (round robin over this machine's), logs opened as slurmd does."""
    values = {"j": r["raw"], "A": r["job"], "a": NO_INDEX if r["index"] is None else r["index"],
              "x": r["name"], "u": os.environ.get("USER", "user"), "N": node_name(0), "n": 0, "t": 0,
              "s": "batch"}
    default = "slurm-%j.out" if r["index"] is None else "slurm-%A_%a.out"
    mode = "a" if r["append"] else "w"
    try:  # a log SLURM cannot open (its folder missing on the node) fails the job, with no log at all
        out = open(Path(r["cwd"]) / expand(r["output"] or default, values), mode)
        err = open(Path(r["cwd"]) / expand(r["error"], values), mode) if r["error"] else subprocess.STDOUT
    except OSError:
        finish(r, 1)
        return None
    mine = sorted(os.sched_getaffinity(0))
    n = min(r["cpus"], len(mine))
    cpus = {mine[(r["raw"] * n + i) % len(mine)] for i in range(n)}
    proc = subprocess.Popen([r["script"]], cwd=r["cwd"], env=batch_env(r), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, start_new_session=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    for f in (out, err):
        if f is not subprocess.STDOUT:
            f.close()
    r.update(state="RUNNING", pid=proc.pid, start=time.time())
    save(r)
    return proc


def finish(r, code):
    r = load(r["id"])  # scancel may have marked it
    if not r["state"].startswith("CANCELLED"):
        r["state"] = "COMPLETED" if code == 0 else "FAILED"
    r.update(exit=f"{code}:0" if code >= 0 else f"0:{-code}", end=time.time())
    save(r)


def run_job(first):
    """The controller for one submission: its tasks, at most `at_once` running."""
    waiting, running = records([str(first)]), {}
    while waiting or running:
        while waiting and len(running) < waiting[0]["at_once"]:
            r = load(waiting.pop(0)["id"])
            if r["state"] == "PENDING" and (proc := start(r)) is not None:
                running[r["id"]] = proc
        for key, proc in list(running.items()):
            if proc.poll() is not None:
                del running[key]
                finish(load(key), proc.returncode)
        time.sleep(0.05)


def srun(argv):
    """A job step: SLURM_NTASKS tasks (or -n) of the command, each with its rank, logs as --output/--error."""
    opts, command = parse("srun", argv)
    if "SLURM_JOB_ID" not in os.environ:
        fail("srun: error: the fake SLURM runs job steps inside a batch job only")
    if not command:
        fail("srun: fatal: No command given to execute.")
    e = os.environ
    nodes, ntasks = int(e["SLURM_JOB_NUM_NODES"]), int(opts.get("ntasks", e["SLURM_NTASKS"]))
    per_node = -(-ntasks // nodes)
    mode = "a" if opts.get("open-mode", e.get("SLURM_OPEN_MODE")) in ("a", "append") else "w"
    procs = []
    for rank in range(ntasks):
        node = rank // per_node
        values = {"j": e["SLURM_JOB_ID"], "A": e.get("SLURM_ARRAY_JOB_ID", e["SLURM_JOB_ID"]),
                  "a": e.get("SLURM_ARRAY_TASK_ID", NO_INDEX), "x": e["SLURM_JOB_NAME"],
                  "u": e.get("USER", "user"), "N": node_name(node), "n": node, "t": rank, "s": 0}
        out = open(expand(opts["output"], values), mode) if "output" in opts else None
        err = (open(expand(opts["error"], values), mode) if "error" in opts
               else subprocess.STDOUT if out else None)  # --output alone: both streams
        env = {**e, "SLURM_PROCID": rank, "SLURM_LOCALID": rank % per_node, "SLURM_NODEID": node,
               "SLURMD_NODENAME": node_name(node), "SLURM_STEP_ID": 0, "SLURM_STEPID": 0,
               "SLURM_STEP_NUM_TASKS": ntasks, "SLURM_STEP_NUM_NODES": nodes,
               "SLURM_STEP_NODELIST": e["SLURM_JOB_NODELIST"], "SLURM_STEP_TASKS_PER_NODE": per_node}
        env = {k: str(v) for k, v in env.items()}
        procs.append(subprocess.Popen(command, env=env, stdout=out, stderr=err))
    codes = [p.wait() for p in procs]
    sys.exit(max(c if c >= 0 else 128 - c for c in codes))  # srun: the highest exit code of its tasks


FIELDS = {f.lower(): f for f in ("JobID", "JobIDRaw", "JobName", "Partition", "State", "ExitCode", "NodeList",
                                 "Elapsed")}


def shown_state(r):
    return f"CANCELLED by {os.getuid()}" if r["state"] == "CANCELLED" else r["state"]


def elapsed(r):
    s = int((r["end"] or time.time()) - r["start"]) if r["start"] else 0
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def sacct(argv):
    """One line per job or array task (an array's pending tasks on one line, 12_[3-5%2]), and its steps."""
    opts, rest = parse("sacct", argv, interleaved=True)
    if rest:
        fail(f"sacct: error: unexpected argument {rest[0]}")
    fields = opts.get("format", "JobID,JobName,Partition,State,ExitCode").split(",")
    if bad := [f for f in fields if f.lower() not in FIELDS]:
        fail(f'sacct: error: Invalid field requested: "{bad[0]}"')
    rows = []
    for r in records(opts["jobs"].split(",") if "jobs" in opts else ()):
        if r["index"] is not None and r["state"] == "PENDING":
            pending = [x["index"] for x in records([str(r["job"])]) if x["state"] == "PENDING"]
            if r["index"] != pending[0]:
                continue
            if len(pending) > 1:
                r = {**r, "id": f"{r['job']}_[{pending[0]}-{pending[-1]}%{r['at_once']}]"}  # contiguous here
        rows.append((r, ""))
        if r["start"] and "allocations" not in opts:
            rows += [(r, ".batch"), (r, ".extern")]

    def value(r, step, field):
        return {"JobID": r["id"] + step, "JobIDRaw": f"{r['raw']}{step}", "JobName": step[1:] or r["name"],
                "Partition": "" if step else r["partition"], "State": shown_state(r), "ExitCode": r["exit"],
                "NodeList": node_list(r["nodes"]) if r["start"] else "None assigned",
                "Elapsed": elapsed(r)}[field]

    names = [FIELDS[f.lower()] for f in fields]
    lines = [[value(r, step, f) for f in names] for r, step in rows]
    if "parsable" in opts or "parsable2" in opts:
        end = "|" if "parsable" in opts else ""
        out = ([] if "noheader" in opts else ["|".join(names) + end]) + ["|".join(x) + end for x in lines]
    else:
        cell = lambda v: (v if len(v) <= 10 else v[:9] + "+").rjust(10)  # noqa: E731
        header = [] if "noheader" in opts else [" ".join(map(cell, names)), " ".join(["-" * 10] * len(names))]
        out = header + [" ".join(map(cell, x)) for x in lines]
    print("\n".join(out))


def squeue(argv):
    """Pending and running jobs, in squeue's --format codes (%i %A %F %K %P %j %u %t %T %M %D %N %R)."""
    opts, _ = parse("squeue", argv, interleaved=True)
    fmt = opts.get("format", "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R")
    asked = opts["jobs"].split(",") if "jobs" in opts else ()
    if asked and not records(asked):
        fail("slurm_load_jobs error: Invalid job id specified")
    active = [r for r in records(asked) if r["state"] in ("PENDING", "RUNNING")
              and r["partition"] in opts.get("partition", r["partition"]).split(",")]
    codes = {"i": ("JOBID", lambda r: r["id"]), "A": ("JOBID", lambda r: r["raw"]),
             "F": ("ARRAY_JOB_ID", lambda r: r["job"]),
             "K": ("ARRAY_TASK_ID", lambda r: "N/A" if r["index"] is None else r["index"]),
             "P": ("PARTITION", lambda r: r["partition"]), "j": ("NAME", lambda r: r["name"]),
             "u": ("USER", lambda r: os.environ.get("USER", "user")),
             "t": ("ST", lambda r: {"PENDING": "PD", "RUNNING": "R"}[r["state"]]),
             "T": ("STATE", shown_state),
             "M": ("TIME", elapsed), "D": ("NODES", lambda r: r["nodes"]),
             "N": ("NODELIST", lambda r: node_list(r["nodes"]) if r["start"] else ""),
             "R": ("NODELIST(REASON)", lambda r: node_list(r["nodes"]) if r["start"] else "(Priority)")}

    def line(r):
        def one(m):
            head, get = codes[m.group(3)]
            text = str(head if r is None else get(r))
            width = int(m.group(2) or 0)
            return text.rjust(width) if m.group(1) else text.ljust(width)
        return re.sub(r"%(\.?)-?(\d*)([iAFKPjutTMDNR])", one, fmt)

    print("\n".join(([] if "noheader" in opts else [line(None)]) + [line(r) for r in active]))


def scancel(argv):
    """Cancel (SIGTERM, SIGKILL a second later: KillWait) or, with --signal, only signal jobs."""
    opts, ids = parse("scancel", argv, interleaved=True)
    if not ids:
        fail("scancel: error: No job identification provided")
    name = str(opts.get("signal", "TERM")).upper().removeprefix("SIG")
    signum = int(name) if name.isdigit() else getattr(signal, f"SIG{name}")
    for r in records(ids):
        if r["state"] in ("PENDING", "RUNNING") and "signal" not in opts:
            r["state"] = "CANCELLED"
            save(r)
        if r["pid"] and not r["end"]:
            try:
                os.killpg(r["pid"], signum)
                if "signal" not in opts:
                    deadline = time.time() + 1  # KillWait, then SIGKILL
                    while time.time() < deadline:
                        os.killpg(r["pid"], 0)
                        time.sleep(0.05)
                    os.killpg(r["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif r["end"]:
            print(f"scancel: error: Kill job error on job id {r['id']}: Job/step already completing or "
                  "completed", file=sys.stderr)
    if not records(ids):
        fail(f"scancel: error: Kill job error on job id {ids[0]}: Invalid job id specified")


if __name__ == "__main__":
    prog, argv = sys.argv[1], sys.argv[2:]
    if argv[:1] == ["--fake-run"]:
        run_job(int(argv[1]))
        sys.exit(0)
    with open(STATE / "calls.jsonl", "a") as f:
        f.write(json.dumps({"prog": prog, "argv": argv}) + "\n")
    {"sbatch": sbatch, "squeue": squeue, "sacct": sacct, "scancel": scancel, "srun": srun}[prog](argv)
