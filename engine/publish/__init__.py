"""Stage 5: a reviewed proposal becomes a branch and a pull request; git in a temporary
worktree and the history store.

``plan`` works out what a publish will do (``provenance`` gives its commit trailers);
``runner`` executes a plan or retries the outbox under the repository's publish lock;
``steps`` is one outbox job's steps (commit, push, pull request, labels); ``gitops`` is git
in the temporary worktree; ``store`` is the SQLite history and outbox, ``records`` what it keeps.
"""
