"""Stage 5: a reviewed proposal becomes a branch and a pull request; git in a temporary
worktree and the history store.
"""
