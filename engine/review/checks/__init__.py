"""Checks on every proposal: the safety of the user's repository and the Backend Dev Agent's rules.

Why: a model's answer is untrusted input. Before anything is written or pushed, the user is
told precisely what is wrong with a proposal (``Finding``: severity, stable code, message,
path, line, how to fix it), what is unsafe is blocked (``error`` findings block publishing),
what is risky needs an explicit acknowledgement (``warning``), and what can be fixed
deterministically is fixed (``fixes.apply_fixes``).

Nothing here trusts ``ChangeProposal``'s own validation: proposals built with
``model_construct`` (or edited by hand) reach these checks with any path and any content, so
every rule is checked here again. ``paths.safe_target`` is the one door through which the
publisher turns a proposal path into a filesystem path.

Every rule has a stable code listed in ``RULES`` (``engine.core.rules``, and in the README's
"Checks" section). The package, one module per rule family:

- ``registry``: ``Finding`` (built from the rule table), ``CheckLimits``, the enabled set of a
  prompt profile, the ``ProposedFile`` record every family reads.
- ``paths``: one path on its own (lexical, working tree, base tree); ``safe_target``.
- ``conventions``: branch suffix, ``Closes #N``, commit and PR title style, lengths, trailers.
- ``content``: placeholders, truncation, Python and data syntax, the final newline.
- ``rewrites``: existing files rewritten (unseen, destructive, uncommitted local edits).
- ``sensitive``: paths whose change runs code (CI, hooks, build, dependencies...).
- ``python_code``: routes and their tests, docstrings, ORM responses, missing requirements.
- ``secret_leaks``: credentials in files and messages.
- ``orchestrator``: ``run_checks``, which runs the families over a whole proposal.
- ``fixes``: ``apply_fixes``, the deterministic fixes.

Importers name the module a name lives in; this file re-exports nothing, so importing one
family (the publisher's ``safe_target``, ``TRAILER_RE``) does not load the others.
"""
