"""Execute the numbered notebooks for a profile with papermill.

    python -m utils.run_notebooks --profile smoke [--only 01,02]

The profile is injected into each notebook's `parameters` cell; executed copies go to
`<results>/<profile>/executed/`. A failing notebook is reported by name and cell and the rest still run;
the exit code is non-zero if any failed. No numbered notebook at all is not an error.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .files import REPO, results_root
from .profiles import PROFILES, get_profile


@dataclass(frozen=True)
class Executed:
    name: str
    ok: bool
    seconds: float
    executed: Path  # the executed copy, outputs included
    error: str = ""  # "cell N: ErrorName: message" when it failed


def find_notebooks(root: Path = REPO, only: list[str] | None = None) -> list[Path]:
    """`NN_*.ipynb` in root, in order; `only` keeps those whose number or name is listed."""
    found = sorted(root.glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = [o for o in only if not any(p.name.startswith(o) for p in found)]
        if unknown:
            names = ", ".join(p.name for p in found) or "none"
            raise ValueError(f"no notebook matches {unknown}; numbered notebooks: {names}")
        found = [p for p in found if any(p.name.startswith(o) for o in only)]
    return found


def describe_failure(err: Exception) -> str:
    """`cell N: Error: message`, N the execution count (In [N] in the executed copy, where papermill
    also marks the failing cell); errors outside a cell (kernel start) are reported as they are."""
    count = getattr(err, "exec_count", None)
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    return f"cell {count}: {ename}: {evalue}" if count is not None else f"{ename}: {evalue}"


def run_one(path: Path, profile: str, out_dir: Path, parameters: dict | None = None) -> Executed:
    import papermill

    executed = out_dir / path.name
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(path),
            str(executed),
            parameters={"profile": profile, **(parameters or {})},
            cwd=str(path.parent),
            kernel_name="python3",
            language="python",
            progress_bar=False,
        )
        return Executed(path.name, True, time.perf_counter() - start, executed)
    except Exception as err:  # a notebook's own failure (PapermillExecutionError) or the kernel's
        return Executed(path.name, False, time.perf_counter() - start, executed, describe_failure(err))


def run(
    profile: str | None = None,
    only: list[str] | None = None,
    root: Path = REPO,
    parameters: dict | None = None,
) -> list[Executed]:
    """Execute the (selected) numbered notebooks in order; every one runs even if an earlier one fails."""
    profile = get_profile(profile).name  # unknown name, or `full` without a GPU: a clear error now
    out_dir = results_root() / profile / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for path in find_notebooks(Path(root), only):
        print(f"[{profile}] {path.name} ...", flush=True)
        result = run_one(path, profile, out_dir, parameters)
        status = "ok" if result.ok else f"FAILED in {result.error}"
        print(f"[{profile}] {path.name}: {status} ({result.seconds:.0f} s)", flush=True)
        runs.append(result)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", help=f"{' | '.join(PROFILES)} (default: full with CUDA, else quick)")
    parser.add_argument("--only", help="comma-separated numbers or names, e.g. 01,02")
    parser.add_argument("--root", type=Path, default=REPO, help="folder holding the notebooks")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    try:
        runs = run(args.profile, only, args.root)
    except (KeyError, ValueError, RuntimeError) as err:
        parser.error(str(err).strip("'\""))
    if not runs:
        print(f"no numbered notebooks (NN_*.ipynb) in {args.root} yet: nothing to run")
        return 0
    failed = [r for r in runs if not r.ok]
    print(
        f"{len(runs) - len(failed)} of {len(runs)} notebooks ran; "
        f"executed copies in {runs[0].executed.parent}"
    )
    for r in failed:
        print(f"FAILED {r.name}: {r.error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
