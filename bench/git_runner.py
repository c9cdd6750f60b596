"""Plain subprocess or GitPython for agent-tui's git runner: the figures behind the choice.

Issue 17 asks to build the one git runner on GitPython (its ``Git`` wrapper raises
``GitCommandError`` with git's stderr; ``Repo.odb`` reads many blobs through one persistent
``git cat-file --batch``) or to show why plain subprocess is better. Two measurements on a
synthetic repository (the context bench's modules, committed, clean work tree):

1. ``--calls`` git commands (``rev-parse HEAD``, ``status --porcelain -z``): a bare
   ``subprocess.run``, ``engine.core.gitcmd.run_git`` (120 s timeout) and ``run_git_bytes``
   (none), vs GitPython's ``Git`` wrapper (which also starts one process per command).
2. Reading the content of every tracked file, as the context's cold build does: one
   ``git cat-file blob`` process per file; one persistent ``git cat-file --batch`` by hand;
   GitPython's ``Repo.odb`` (the same batch process, behind its object-database API); and
   what the context builder does (``snapshot._read_docs``: the work tree, read by a few
   threads). The byte totals are checked equal, so every way reads the same content.

Run (from the repository root; ~1 minute for the defaults)::

    PYTHONPATH=. python bench/git_runner.py [--files 2000] [--calls 200] [--per-file 500]

Each line prints seconds and the ratio to the fastest way of its group.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import git
from context_build import make_repo

from engine.context.snapshot import _read_docs
from engine.core.gitcmd import git_env, run_git, run_git_bytes


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    """The fastest of ``runs`` timings of ``fn`` (seconds) and its result."""
    best, result = float("inf"), 0
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def report(title: str, rows: list[tuple[str, float]]) -> None:
    fastest = min(s for _n, s in rows)
    print(title)
    for name, seconds in rows:
        print(f"  {name:<44} {seconds:8.3f} s  x{seconds / fastest:5.2f}")


def tracked_blobs(root: Path) -> list[tuple[str, str]]:
    """(path, blob sha) of every tracked regular file."""
    out = run_git_bytes(root, "ls-files", "-s", "-z").stdout
    blobs = []
    for record in out.split(b"\0"):
        if record:
            meta, _tab, path = record.partition(b"\t")
            mode, sha, _stage = meta.split(b" ")
            if mode.startswith(b"100"):
                blobs.append((path.decode("utf-8", "surrogateescape"), sha.decode()))
    return blobs


def cat_file_batch(root: Path, shas: list[str]) -> int:
    """Every blob through one ``git cat-file --batch`` (written by a thread, read here)."""
    proc = subprocess.Popen(
        ["git", "--no-optional-locks", "cat-file", "--batch"],
        cwd=root,
        env=git_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def feed() -> None:
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{s}\n" for s in shas).encode())
        proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    total = 0
    for _sha in shas:
        header = proc.stdout.readline().split()
        size = int(header[2])
        total += len(proc.stdout.read(size))
        proc.stdout.read(1)  # the newline after each object
    writer.join()
    proc.wait()
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--per-file", type=int, default=500, help="files read one process each")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="agent-tui-git-bench-") as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        make_repo(root, args.files)
        repo = git.Repo(root)
        gp = git.Git(root)
        print(f"git {run_git(root, '--version').stdout.split()[-1]}, GitPython {git.__version__}")

        run_git(root, "update-index", "-q", "--refresh", check=False)  # a settled index
        n = args.calls
        ways: dict[str, Callable[[], object]] = {
            "subprocess.run, no flags, rev-parse HEAD": lambda: subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True
            ),
            "run_git rev-parse HEAD": lambda: run_git(root, "rev-parse", "HEAD"),
            "run_git_bytes rev-parse HEAD (no timeout)": lambda: run_git_bytes(
                root, "rev-parse", "HEAD"
            ),
            "GitPython Git.rev_parse HEAD": lambda: gp.rev_parse("HEAD"),
            "run_git_bytes status --porcelain -z": lambda: run_git_bytes(
                root, "status", "--porcelain=v1", "-z"
            ),
            "GitPython Git.status --porcelain -z": lambda: gp.status("--porcelain=v1", "-z"),
        }
        best = dict.fromkeys(ways, float("inf"))
        for _round in range(args.runs):  # interleaved: a busy machine slows every way alike
            for name, call in ways.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    call()
                best[name] = min(best[name], time.perf_counter() - t0)
        report(
            f"{n} calls of each command (best of {args.runs} interleaved rounds)",
            list(best.items()),
        )

        blobs = tracked_blobs(root)
        shas = [sha for _p, sha in blobs]
        ids = {p: "blob:" + sha for p, sha in blobs}
        paths = [p for p, _s in blobs]
        k = min(args.per_file, len(blobs))

        def per_file() -> int:
            return sum(len(run_git_bytes(root, "cat-file", "blob", s).stdout) for s in shas[:k])

        def odb() -> int:
            return sum(len(repo.odb.stream(bytes.fromhex(s)).read()) for s in shas)

        def work_tree() -> int:
            return sum(d.size for d, _t in _read_docs(root, paths, ids, 200_000))

        t_per, n_per = best_of(1, per_file)
        t_batch, n_batch = best_of(args.runs, lambda: cat_file_batch(root, shas))
        t_odb, n_odb = best_of(args.runs, odb)
        t_wt, n_wt = best_of(args.runs, work_tree)
        assert n_batch == n_odb == n_wt, (n_batch, n_odb, n_wt)
        report(
            f"reading all {len(blobs)} tracked files ({n_wt} bytes), as a cold context build",
            [
                (
                    f"one cat-file process per file (x{len(blobs) / k:.1f} of {k})",
                    t_per * len(blobs) / k,
                ),
                ("hand-rolled persistent cat-file --batch", t_batch),
                ("GitPython Repo.odb (persistent cat-file --batch)", t_odb),
                ("work tree, threads (snapshot._read_docs, today)", t_wt),
            ],
        )
        print(f"per-file reads measured on {k} files ({n_per} bytes), scaled to all")
        repo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
