"""A proposal as JSON: reading a proposal file by its shape only, and writing one back.

Why here, beside the proposal model (``engine.core.models``) and not in the review stage:
the CLI's ``check`` and ``publish`` read a proposal file before any check runs, and the
shape of a proposal is the model's business. The values are judged later, by the checks
(``engine.review.checks``): a path like ``../x`` must reach them and be reported with its
rule code, so nothing here validates what the model's patterns would refuse. Stdlib only,
so the core stays light to import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.core.errors import InvalidProposalError
from engine.core.models import ChangeProposal, FileChange

_PROPOSAL_SHAPE_HINT = (
    "a proposal is one JSON object {branch_suffix, commit_message, pr_title, pr_body, "
    "files: [{path, content}]}, every value a string"
)


_TEXT_FIELDS = ("branch_suffix", "commit_message", "pr_title", "pr_body")


def proposal_from_data(data: object) -> ChangeProposal:
    """A proposal from parsed JSON, checking only its shape (the checks judge the values).

    Why not ``ChangeProposal.model_validate``: a path like ``../x`` must reach the checks
    and be reported with its code, not be rejected by the model's pattern first.

    Args:
        data: the parsed JSON.

    Returns:
        The proposal, built with ``model_construct``.

    Raises:
        InvalidProposalError: not an object, a missing or extra key, a value not a string,
            files not a list of {path, content} string objects.
    """
    problems: list[str] = []
    if not isinstance(data, dict):
        raise InvalidProposalError(
            f"the proposal is a JSON {type(data).__name__}, not an object",
            hint=_PROPOSAL_SHAPE_HINT,
        )
    expected = (*_TEXT_FIELDS, "files")
    missing = [k for k in expected if k not in data]
    extra = sorted(str(k) for k in data if k not in expected)
    if missing:
        problems.append("missing " + ", ".join(missing))
    if extra:
        problems.append("unexpected " + ", ".join(extra))
    for key in _TEXT_FIELDS:
        if key in data and not isinstance(data[key], str):
            problems.append(f"{key} is not a string")
    files = data.get("files")
    changes: list[FileChange] = []
    if "files" in data and not isinstance(files, list):
        problems.append("files is not a list")
    elif isinstance(files, list):
        for i, item in enumerate(files):
            if not isinstance(item, dict) or set(item) != {"path", "content"}:
                problems.append(f"files[{i}] is not an object with exactly path and content")
            elif not isinstance(item["path"], str) or not isinstance(item["content"], str):
                problems.append(f"files[{i}].path and .content must be strings")
            else:
                changes.append(
                    FileChange.model_construct(path=item["path"], content=item["content"])
                )
    if problems:
        raise InvalidProposalError("; ".join(problems), hint=_PROPOSAL_SHAPE_HINT)
    return ChangeProposal.model_construct(**{k: data[k] for k in _TEXT_FIELDS}, files=changes)


def load_proposal_file(path: Path) -> ChangeProposal:
    """Read a proposal JSON file (``agent-tui check``), checking only its shape.

    Args:
        path: the JSON file.

    Returns:
        The proposal.

    Raises:
        InvalidProposalError: unreadable, not UTF-8, not JSON, or not shaped like a proposal.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidProposalError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the file's path"
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidProposalError(
            f"{path} is not UTF-8 text (byte {exc.start})", hint=_PROPOSAL_SHAPE_HINT
        ) from exc
    try:
        data = json.loads(text)
    except RecursionError:
        raise InvalidProposalError(
            f"{path} is nested too deeply to be a proposal", hint=_PROPOSAL_SHAPE_HINT
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidProposalError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            hint=_PROPOSAL_SHAPE_HINT,
        ) from exc
    try:
        return proposal_from_data(data)
    except InvalidProposalError as exc:
        raise InvalidProposalError(f"{path}: {exc.message}", hint=exc.hint) from exc


def proposal_to_data(proposal: Any) -> dict[str, Any]:
    """The proposal as plain JSON data, even when built with ``model_construct``."""
    files = []
    for item in getattr(proposal, "files", None) or []:
        if isinstance(item, dict):
            files.append({"path": item.get("path"), "content": item.get("content")})
        else:
            files.append(
                {"path": getattr(item, "path", None), "content": getattr(item, "content", None)}
            )
    data: dict[str, Any] = {k: getattr(proposal, k, None) for k in _TEXT_FIELDS}
    data["files"] = files
    return data
