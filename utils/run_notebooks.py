"""Execute the numbered notebooks for a profile with papermill, streaming their progress to the terminal.

    python -m utils.run_notebooks --profile smoke [--only 01,03] [--dataset mnist] [-p n_images=100]

The profile (and --dataset, and every -p KEY=VALUE) is injected into each notebook's `parameters` cell;
the profile and dataset name the results folder, so they are given as --profile and --dataset, never -p.
`-p` sets the shared parameters (models, device, seed) of every notebook, or any knob of a notebook's typed
config (utils.config.CONFIGS; e.g. `--only 02 -p n_images=100`), which reaches the notebooks that have it as
their `overrides`; an unknown knob or a value of the wrong type fails before anything runs, listing the knobs.
While a notebook runs, what it prints (one line per epoch or stage) is shown here, prefixed by its number.
The executed copy is written to `<results>/<profile>/executed/<name>` only when the notebook succeeds; a
failed run leaves `<name>.failed.ipynb` beside it and the last good copy untouched. A failing notebook is
reported by name and cell and the rest still run; the exit code is 1 if any failed, 2 for bad arguments.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import cli, config
from .data.registry import check_dataset_name
from .files import REPO, _pid_alive, atomic_write, results_root
from .profiles import PROFILES, get_profile


@dataclass(frozen=True)
class Executed:
    name: str
    ok: bool
    seconds: float
    executed: Path  # the executed copy (outputs included); <name>.failed.ipynb when it failed
    error: str = ""  # "cell N: ErrorName: message" when it failed



# papermill's default, 60 s, is shorter than a kernel's start (its imports: torch, timm) on two busy cores:
# a clean-clone .ci/run at 60221fc lost smoke's 02 to "Kernel didn't respond in 60 seconds" while the other
# test worker trained.
KERNEL_START_TIMEOUT_S = 600

def find_notebooks(root: Path = REPO, only: list[str] | None = None) -> list[Path]:
    """`NN_*.ipynb` in root, in order; `only` keeps those whose number (NN), stem or file name is listed
    (exactly: "0" matches nothing). An unmatched entry is a ValueError listing the notebooks."""
    found = sorted(Path(root).glob("[0-9][0-9]_*.ipynb"))
    if only is None:
        return found
    names = lambda p: {p.name[:2], p.stem, p.name}
    unknown = [o for o in only if not any(o in names(p) for p in found)]
    if unknown or not only:
        listed = ", ".join(p.name for p in found) or "none"
        raise ValueError(f"no notebook matches {unknown or only}; give numbers or names of: {listed}")
    return [p for p in found if names(p) & set(only)]


def describe_failure(err: Exception) -> str:
    """`cell N: Error: message`, N the execution count (In [N] in the executed copy, where papermill
    also marks the failing cell); errors outside a cell (kernel start) are reported as they are."""
    count = getattr(err, "exec_count", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    return f"cell {count}: {ename}: {evalue}" if count is not None else f"{ename}: {evalue}"


class _Prefixed:
    """A file-like target for a notebook's printed lines (papermill's stdout_file): each complete line goes
    to our stdout with the notebook's number in front. Tables and figures are not printed (they are in the
    executed copy)."""

    def __init__(self, prefix: str):
        self.prefix, self.pending = prefix, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                print(f"  {self.prefix} {line}", flush=True)
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            print(f"  {self.prefix} {self.pending}", flush=True)
        self.pending = ""


def _ipc_kernel_manager():
    """A kernel manager on IPC sockets: no 'running over TCP without encryption' warning, nothing on a
    port. Each kernel's sockets get their own path prefix in the temp folder: jupyter_client's default,
    `kernel-ipc-N` in the working directory with N the first number whose file is absent, gave two kernels
    started at once in the repository (two test workers) the same sockets: their messages crossed ("Invalid
    Signature", a kernel waiting forever; smoke's 05 and 07 in a two-worker run at 5ed3e3a)."""
    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.transport = "ipc"
            self.ip = ipc_prefix()

    return IPCKernelManager


def ipc_prefix() -> str:
    """A socket path prefix no other kernel uses: the temp folder, this process, a random part."""
    return os.path.join(tempfile.gettempdir(), f"mlpzoom-kernel-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def working_copy(out_dir: Path, path: Path) -> Path:
    """`.<stem>.running-<pid>.ipynb`: one per process, so a second run of the notebook never overwrites
    or removes this run's copy; copies left by killed runs (their process gone) are removed here."""
    for old in out_dir.glob(f".{path.stem}.running-*.ipynb"):
        pid = old.name.rsplit("-", 1)[1].removesuffix(".ipynb")
        if pid.isdigit() and not _pid_alive(int(pid)):
            old.unlink(missing_ok=True)
    return out_dir / f".{path.stem}.running-{os.getpid()}.ipynb"


def run_one(path: Path, profile: str, out_dir: Path, parameters: dict | None = None,
            stream: bool = True) -> Executed:
    import papermill

    final, start = out_dir / path.name, time.perf_counter()
    working = working_copy(out_dir, path)
    printed = _Prefixed(f"[{path.name[:2]}]") if stream else None
    try:
        papermill.execute_notebook(str(path), str(working),
                                   parameters={"profile": profile, **(parameters or {})},
                                   cwd=str(path.parent), kernel_name="python3", language="python",
                                   progress_bar=False, stdout_file=printed,
                                   kernel_manager_class=_ipc_kernel_manager(),
                                   start_timeout=KERNEL_START_TIMEOUT_S)
        atomic_write(final, lambda p: working.replace(p))
        return Executed(path.name, True, time.perf_counter() - start, final)
    except Exception as err:  # a notebook's own failure (PapermillExecutionError) or the kernel's
        failed = out_dir / f"{path.stem}.failed.ipynb"
        if working.exists():
            working.replace(failed)
        return Executed(path.name, False, time.perf_counter() - start, failed, describe_failure(err))
    finally:
        if printed is not None:
            printed.flush()
        working.unlink(missing_ok=True)


def run(profile: str | None = None, only: list[str] | None = None, root: Path = REPO,
        parameters: dict | None = None, stream: bool = True) -> list[Executed]:
    """Execute the (selected) numbered notebooks in order; every one runs even if an earlier one fails.
    `parameters`: the shared ones (dataset, models, device, seed) go to every notebook; any other key is a
    knob of a notebook's typed config and reaches the notebooks that have it as `overrides` (checked)."""
    profile = get_profile(profile).name  # unknown name, or `full` without a GPU: a clear error now
    check_parameters(parameters or {})
    notebooks = find_notebooks(Path(root), only)
    if not notebooks:
        raise ValueError(f"no numbered notebooks (NN_*.ipynb) in {root}")
    per_notebook = {p: notebook_parameters(p.stem, parameters or {}) for p in notebooks}
    check_knobs_known(notebooks, parameters or {})
    out_dir = results_root() / profile / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for path in notebooks:
        print(f"[{profile}] {path.name} ...", flush=True)
        result = run_one(path, profile, out_dir, per_notebook[path], stream)
        status = "ok" if result.ok else f"FAILED in {result.error}"
        print(f"[{profile}] {path.name}: {status} ({result.seconds:.0f} s)", flush=True)
        runs.append(result)
    return runs


SHARED = ("dataset", "models", "device", "seed")  # literals of every parameters cell (profile: --profile)


def notebook_parameters(notebook: str, parameters: dict) -> dict:
    """One notebook's parameters: the shared ones as given, and every other key that names a knob of its
    typed config (utils.config.CONFIGS) in its `overrides` (type-checked here, before anything runs)."""
    shared = {k: v for k, v in parameters.items() if k in SHARED}
    cls = config.config_class(notebook)
    if cls is None:  # 07: nothing to size
        return shared
    knobs = config.knobs(cls)
    mine = {k: v for k, v in parameters.items() if k in knobs}
    overrides = {**parameters.get("overrides", {}), **mine}
    config.check(cls, overrides)
    return {**shared, "overrides": overrides}


def check_knobs_known(notebooks: list[Path], parameters: dict) -> None:
    """A key that is neither shared nor a knob of any selected notebook is an error listing the knobs."""
    typed = [p for p in notebooks if config.config_class(p.stem) is not None]
    known = {k for p in typed for k in config.knobs(config.config_class(p.stem))}
    unknown = [k for k in parameters if k not in known and k not in (*SHARED, "overrides")]
    if unknown:
        listing = "; ".join(f"{p.stem}: {', '.join(config.knobs(config.config_class(p.stem)))}"
                            for p in typed) or "none (no selected notebook has a config)"
        raise KeyError(f"no selected notebook has the knob {', '.join(map(repr, unknown))}; shared: "
                       f"{', '.join(SHARED)}; knobs: {listing}")


def check_parameters(parameters: dict) -> None:
    """The profile is run()'s own argument (it picks the results folder: a `profile` parameter would
    override it in the notebook and file its results under another profile); a dataset must be a registered
    name (it becomes a folder: never a path)."""
    if "profile" in parameters:
        raise ValueError(f"profile={parameters['profile']!r} as a parameter would be filed under another "
                         "profile's results; give it as --profile (run(profile=...))")
    if parameters.get("dataset") is not None:
        check_dataset_name(parameters["dataset"])


def main(argv: list[str] | None = None) -> int:
    parser = cli.notebook_parser(__doc__, "run", list(PROFILES))
    parser.add_argument("--root", type=Path, default=REPO, help="folder holding the notebooks")
    parser.add_argument("--quiet", action="store_true", help="do not stream the notebooks' output")
    args = parser.parse_args(argv)
    only = [o.strip() for o in args.only.split(",") if o.strip()] if args.only is not None else None
    for key in ("profile", "dataset"):  # one way each: two would silently disagree
        if key in dict(args.parameter):
            parser.error(f"-p {key}=... is not a notebook parameter here; give it as --{key}")
    parameters = dict(args.parameter) | ({"dataset": args.dataset} if args.dataset else {})
    try:
        runs = run(args.profile, only, args.root, parameters, stream=not args.quiet)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        parser.error(str(err).strip("'\""))
    failed = [r for r in runs if not r.ok]
    print(f"{len(runs) - len(failed)} of {len(runs)} notebooks ran; "
          f"executed copies in {runs[0].executed.parent}")
    for r in failed:
        print(f"FAILED {r.name}: {r.error} (executed copy: {r.executed})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
