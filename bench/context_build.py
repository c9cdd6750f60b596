"""Context build time on a synthetic 50,000-file repository, cold and warm, side by side.

Builds a git repository of N small Python modules (deterministic content, a few hundred
bytes each, 50 packages x 40 subpackages), then times ``build_context`` for an issue with
the embedded model's real tokenizer (the default model profile's backend):

* first build ever: lists, reads and indexes every file, then persists the index (in the
  background) in the user cache dir;
* cold: a new process's first build (no in-memory cache; ``clear_cache``), with the index
  on disk: only the listing, the index load and the prompt;
* warm: the same state again (the cache keyed by HEAD + working tree state is reused);
* warm, other issue: the same state, a different query;
* one file edited: the working tree changed, only that file is read again.

Usage::

    python bench/context_build.py [--files 50000] [--keep DIR]

The last three lines are ``first context build ever N files: S s``, ``cold context build N
files: S s`` (goal <= 5 s) and ``context build N files: S s`` (warm; goal <= 1 s).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from engine.context.build import build_context, clear_cache
from engine.context.persist import index_path, wait_for_index_saves
from engine.context.prompts import load_profile
from engine.core.config import load_config
from engine.core.models import Issue
from engine.generate.backends import get_backend

WORDS = (
    "user account order invoice payment product cart session token health status item price "
    "customer address email report audit shipment refund coupon review rating catalog stock "
    "warehouse supplier tenant role permission webhook export import schedule notification"
).split()


def git(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    subprocess.run(["git", *args], cwd=cwd, check=True, env=env, stdout=subprocess.DEVNULL)


def make_module(rng: random.Random, i: int) -> tuple[str, str]:
    """The repository path and content of synthetic module ``i``."""
    a, b, c, d = rng.sample(WORDS, 4)
    lines = [f'"""{a.title()} {b} helpers (module {i})."""', "", "import logging", ""]
    for j in range(rng.randint(2, 5)):
        lines += [
            f"def {a}_{b}_{j}({c}_id: int, {d}_repo) -> dict:",
            f'    """Return the {b} of a {a} for {c} {{{c}_id}}."""',
            f"    record = {d}_repo.get_{c}({c}_id)",
            f"    return {{'{a}': record.{b}, 'count': {j}}}",
            "",
        ]
    return f"pkg_{i % 50:02d}/sub_{(i // 50) % 40:02d}/{a}_{b}_{i}.py", "\n".join(lines)


def make_repo(root: Path, n_files: int) -> None:
    rng = random.Random(42)
    for i in range(n_files):
        path, text = make_module(rng, i)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    (root / "requirements.txt").write_text("fastapi\nsqlalchemy\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "synthetic")


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the repository here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="agent-tui-bench-"))
    root = args.keep or tmp / "repo"
    try:
        if not (root / ".git").is_dir():
            root.mkdir(parents=True, exist_ok=True)
            _none, gen_s = timed(lambda: make_repo(root, args.files))
            print(f"generated {args.files} files + git commit in {gen_s:.1f} s")
        config = load_config(root)
        model = config.profile()
        backend = get_backend(config.default_model, model)
        profile = load_profile(config.default_prompt, root)
        issues = [
            Issue(
                number=1,
                title="Refund totals are wrong for partial shipments",
                body="`refund_shipment_2` returns the wrong count; see the refund helpers.",
                labels=["bug"],
            ),
            Issue(number=2, title="Add a webhook for coupon exports", body="Notify on export."),
        ]

        def build(issue: Issue):  # type: ignore[no-untyped-def]
            return build_context(
                root,
                issue,
                profile,
                count_messages=backend.count_tokens,
                count_text=backend.count_text,
                n_ctx=model.n_ctx,
                max_tokens=model.max_tokens,
            )

        backend.count_text("warm up the tokenizer")  # model load is not context building
        for thread in threading.enumerate():  # nor is its background part (llguidance's
            if thread.name == "llguidance-tokenizer":  # tokenizer, ~3 s of CPU here)
                thread.join()
        index_path(root.resolve()).unlink(missing_ok=True)  # a first build ever
        first, first_s = timed(lambda: build(issues[0]))
        wait_for_index_saves()
        clear_cache()  # a new process: nothing in memory, the persisted index on disk
        cold, cold_s = timed(lambda: build(issues[0]))
        warm, warm_s = timed(lambda: build(issues[0]))
        other, other_s = timed(lambda: build(issues[1]))
        edited_file = root / cold.shown[-1].path
        edited_file.write_text(edited_file.read_text() + "\n# edited\n")
        edited, edited_s = timed(lambda: build(issues[0]))
        again, again_s = timed(lambda: build(issues[0]))
        # git's untracked cache (part of `feature.manyFiles`) speeds up `git status`
        git(root, "update-index", "--untracked-cache")
        git(root, "status", "--porcelain")
        cached, cached_s = timed(lambda: build(issues[0]))
        assert first.messages == cold.messages, "the persisted index changed the prompt"
        assert [(f.path, f.tokens, f.score) for f in first.shown] == [
            (f.path, f.tokens, f.score) for f in cold.shown
        ]
        assert warm.cache_hit and not cold.cache_hit and not edited.cache_hit
        assert again.cache_hit and cached.cache_hit
        assert warm.messages == cold.messages, "same state must give the same messages"
        assert cached.messages == edited.messages
        for r in (cold, warm, other, edited, again, cached):
            assert r.total_tokens <= r.budget

        print(f"model {config.default_model!r}: n_ctx {model.n_ctx}, budget {cold.budget}")
        print(
            f"prompt: {cold.total_tokens} tokens, {len(cold.shown)} files shown, "
            f"{len(cold.left_out)} left out, tree summarised: {cold.tree_summarised}"
        )
        print(f"{'build':<40} {'seconds':>8} {'vs cold':>8}")
        for label, secs in (
            ("first build ever: read + index all", first_s),
            ("cold: new process, index on disk", cold_s),
            ("warm, same issue", warm_s),
            ("warm, other issue", other_s),
            ("one file edited (re-read 1 file)", edited_s),
            ("warm after the edit", again_s),
            ("warm, git untracked cache on", cached_s),
        ):
            print(f"{label:<40} {secs:>8.3f} {secs / cold_s:>8.3f}")
        print(f"first context build ever {args.files} files: {first_s:.3f} s")
        print(f"cold context build {args.files} files: {cold_s:.3f} s")
        print(f"context build {args.files} files: {warm_s:.3f} s")
        return 0
    finally:
        if args.keep is None:
            wait_for_index_saves()
            index_path(root.resolve()).unlink(missing_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
