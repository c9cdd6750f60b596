"""Issue list at startup: from the SQLite cache vs from GitHub, side by side in one run.

Serves N issues (default 2,000: 20 pages of 100) from the loopback GitHub of the tests
(``tests/github_fake.py``, real ghapi over HTTP), then times:

* first refresh: every open issue, all pages (what a cold start without a cache costs);
* incremental refresh: nothing changed (``since``: one request);
* cache read: ``list_issues()`` of a new source object (what the TUI shows at startup).

Usage::

    python bench/issue_cache.py [--issues 2000]

Loopback HTTP is the best case for the network path; real GitHub adds 100-500 ms per page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.issues.forge.github import GitHubRepo  # noqa: E402
from engine.issues.forge.github_source import GitHubIssueSource  # noqa: E402
from engine.issues.forge.github_token import Token  # noqa: E402
from tests.github_fake import FAKE_TOKEN, FakeGitHub  # noqa: E402


def _timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=2000)
    args = parser.parse_args()
    fake = FakeGitHub().start()
    for n in range(args.issues):
        fake.add_issue(f"issue {n}", "body " * 40, labels=["bug", "api"], assignees=["alice"])
    with tempfile.TemporaryDirectory() as tmp:
        repo = GitHubRepo(fake.owner, fake.repo, fake.api_url)
        token = Token(FAKE_TOKEN, "bench")
        source = GitHubIssueSource(repo, Path(tmp) / "cache.sqlite", token)
        _ = source.client  # ghapi builds its client once per process (about 1 s): not timed
        full, t_full = _timed(source.refresh)
        incr, t_incr = _timed(source.refresh)
        fresh = GitHubIssueSource(repo, Path(tmp) / "cache.sqlite", token)
        issues, t_cache = _timed(fresh.list_issues)
    fake.stop()
    assert len(issues) == args.issues == full.total
    print(f"issues                         {args.issues}")
    print(f"first refresh (all pages)      {t_full * 1000:8.1f} ms")
    print(f"incremental refresh (since)    {t_incr * 1000:8.1f} ms  ({incr.fetched} fetched)")
    print(f"cache read at startup          {t_cache * 1000:8.1f} ms")
    print(f"cache vs first refresh         {t_full / t_cache:8.1f}x faster")


if __name__ == "__main__":
    main()
