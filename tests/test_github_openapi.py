"""The app and the fake GitHub against GitHub's own OpenAPI description.

The fixture ``tests/fixtures/github_openapi/operations.json`` holds, verbatim, the operations
agent-tui calls and the schemas they reference, extracted from the npm package
``@octokit/openapi`` by ``extract.py`` next to it (version and sha256 recorded in the file).
One scenario drives the real client (issues, comments, a publish, a reused pull request, a
fork's ``head_repo``, refused drafts, errors) against the fake, then checks:

* every response the fake gave validates against the operation's response schema for its
  status (a status the description does not list: GitHub's ``basic-error``);
* every request the app sent is valid for its operation: known query parameters with valid
  values, a body with the required fields, valid values, and no field the operation lacks;
* every field the app read from a response exists in that response's schema (reads are
  recorded by wrapping what the client hands the app).

GitHub's description is OpenAPI 3.0: ``nullable: true`` is turned into JSON Schema's
``"null"`` type (or ``anyOf`` with null where there is no ``type``) before validating with
``jsonschema`` (draft 2020-12); ``format`` is not asserted, as OpenAPI leaves it advisory.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import engine.issues.forge.github as gh
from engine.core.errors import GitHubError, IssueNotFoundError
from engine.core.models import ChangeProposal
from engine.issues.forge.github import GitHubRepo
from engine.issues.forge.github_source import GitHubIssueSource
from engine.issues.forge.github_token import Token
from engine.publish.plan import build_plan
from engine.publish.runner import execute
from tests import test_publish
from tests.conftest import git
from tests.github_fake import FAKE_TOKEN, RawBody, RecordedRequest
from tests.test_publish import PROPOSAL, Project

FIXTURE = Path(__file__).parent / "fixtures" / "github_openapi" / "operations.json"
project = test_publish.project


# ----------------------------------------------------------------------------------------------
# the description


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable`` as JSON Schema (recursively, on a copy)."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        if "type" in out:
            kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*kinds, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class Description:
    """The extracted operations, their schemas as JSON Schema, and validators."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text())
        self.source = data["source"]
        self.operations: dict[str, Any] = data["operations"]
        self.components = {"schemas": _nullable(data["components"]["schemas"])}
        self._patterns = [
            (key, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", key.split(" ", 1)[1]) + "$"))
            for key in self.operations
        ]

    def operation(self, method: str, path: str) -> str | None:
        """``"GET /repos/{owner}/{repo}/issues"`` for a concrete request, or None."""
        for key, pattern in self._patterns:
            if key.startswith(method.upper() + " ") and pattern.match(path):
                return key
        return None

    def schema(self, node: Any) -> dict[str, Any]:
        """A JSON Schema document for ``node`` (an operation's schema), refs resolvable."""
        return {**_nullable(copy.deepcopy(node)), "components": self.components}

    def response_schema(self, op: str, status: int) -> dict[str, Any]:
        responses = self.operations[op]["responses"]
        entry = responses.get(str(status))
        if entry is None or entry.get("schema") is None:
            if status < 400:
                raise AssertionError(f"{op} does not document a {status} answer")
            return self.schema({"$ref": "#/components/schemas/basic-error"})
        return self.schema(entry["schema"])

    def errors(self, schema: dict[str, Any], value: Any) -> list[str]:
        validator = jsonschema.Draft202012Validator(schema)
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:200]}"
            for e in validator.iter_errors(value)
        ]

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.components["schemas"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def has_path(self, node: dict[str, Any], parts: list[str]) -> bool:
        """Whether the schema declares the field ``parts`` (``[]`` steps into an array)."""
        node = self.resolve(node)
        if not parts:
            return True
        branches = [*node.get("anyOf", []), *node.get("oneOf", []), *node.get("allOf", [])]
        if any(self.has_path(b, parts) for b in branches):
            return True
        head, rest = parts[0], parts[1:]
        if head == "[]":
            return isinstance(node.get("items"), dict) and self.has_path(node["items"], rest)
        prop = (node.get("properties") or {}).get(head)
        return isinstance(prop, dict) and self.has_path(prop, rest)


@pytest.fixture(scope="module")
def description() -> Description:
    return Description(FIXTURE)


def test_the_fixture_records_its_source(description: Description) -> None:
    source = description.source
    assert source["package"] == "@octokit/openapi" and re.fullmatch(
        r"\d+\.\d+\.\d+", source["version"]
    )
    assert re.fullmatch(r"[0-9a-f]{64}", source["sha256"])
    # every REST call the client makes is in the extract (extract.py's list)
    assert set(description.operations) == {
        "GET /repos/{owner}/{repo}",
        "GET /repos/{owner}/{repo}/issues",
        "GET /repos/{owner}/{repo}/issues/{issue_number}",
        "GET /repos/{owner}/{repo}/issues/{issue_number}/comments",
        "POST /repos/{owner}/{repo}/issues/{issue_number}/labels",
        "GET /repos/{owner}/{repo}/pulls",
        "POST /repos/{owner}/{repo}/pulls",
    }


def test_nullable_becomes_json_schema_null() -> None:
    schema = _nullable({"type": "string", "nullable": True, "enum": ["a"]})
    assert schema == {"type": ["string", "null"], "enum": ["a", None]}
    ref = _nullable({"allOf": [{"$ref": "#/x"}], "nullable": True})
    assert ref == {"anyOf": [{"allOf": [{"$ref": "#/x"}]}, {"type": "null"}]}


# ----------------------------------------------------------------------------------------------
# what the app reads


class _Reads:
    """Fields the app read from GitHub's answers: (operation, status) -> dotted paths."""

    def __init__(self) -> None:
        self.paths: dict[tuple[str, int], set[str]] = {}
        self.current: tuple[str, int] | None = None

    def add(self, path: str) -> None:
        if self.current is not None:
            self.paths.setdefault(self.current, set()).add(path)


class _TrackedDict(dict):  # type: ignore[type-arg]
    def __init__(self, data: dict[str, Any], reads: _Reads, prefix: str) -> None:
        super().__init__({k: _track(v, reads, f"{prefix}{k}") for k, v in data.items()})
        self._reads, self._prefix = reads, prefix

    def __getitem__(self, key: Any) -> Any:
        self._reads.add(f"{self._prefix}{key}")
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._reads.add(f"{self._prefix}{key}")
        return super().get(key, default)

    def __contains__(self, key: Any) -> bool:
        self._reads.add(f"{self._prefix}{key}")
        return super().__contains__(key)


def _track(value: Any, reads: _Reads, prefix: str) -> Any:
    if isinstance(value, dict):
        return _TrackedDict(value, reads, f"{prefix}." if prefix else "")
    if isinstance(value, list):
        return [_track(v, reads, f"{prefix}[]") for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# the scenario


@pytest.fixture
def scenario(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, description: Description
) -> Iterator[tuple[list[RecordedRequest], _Reads]]:
    """Drive every call the app makes, with the answers that matter, and record them."""
    fake = project.fake
    reads = _Reads()
    plain = gh._plain

    def tracking_plain(value: Any) -> Any:
        last = fake.requests[-1] if fake.requests else None
        op = description.operation(last.method, last.path) if last else None
        reads.current = (op, last.status) if op and last else None
        return _track(plain(value), reads, "")

    monkeypatch.setattr(gh, "_plain", tracking_plain)

    fake.add_issue(
        "Items list should support ?q= title search",
        "Filter by title.",
        labels=["enhancement"],
        assignees=["alice"],
        milestone="v1.0",
        comments=["+1", "please add a test"],
    )
    fake.add_issue("closed long ago", state="closed")
    repo = GitHubRepo(fake.owner, fake.repo, fake.api_url)
    token = Token(FAKE_TOKEN, "GH_TOKEN")
    source = GitHubIssueSource(repo, tmp_path / "cache.sqlite", token)
    source.refresh()  # every open issue
    fake.update_issue(1, title="Add a /health endpoint")
    source.refresh()  # since=..., state=all
    assert [c.body for c in source.comments(2)] == ["+1", "please add a test"]
    fresh = GitHubIssueSource(repo, tmp_path / "other.sqlite", token)
    assert fresh.get_issue(2).milestone == "v1.0"  # GET one issue
    with pytest.raises(IssueNotFoundError):
        fresh.get_issue(99)  # a 404

    assert execute(project.plan()).published  # default branch, PR lookup, create, labels
    changed = {**PROPOSAL, "files": [{"path": "README.md", "content": "# changed again\n"}]}
    update = project.plan(proposal=changed, on_existing="update")  # the lookup finds the PR
    assert update.existing_pr and execute(update).published

    fake.drafts_supported = False  # 422, then created ready for review
    other = ChangeProposal.model_validate({**PROPOSAL, "branch_suffix": "refused-draft"})
    refused = build_plan(project.repo, project.config(), other, 1)
    assert execute(refused).published

    url = fake.add_fork("widgets-fork")  # a same-owner fork: head_repo
    git(project.repo, "remote", "add", "fork", url)
    config = fake.write_config(tmp_path / "fork.toml", remote="fork", draft=False)
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    forked = ChangeProposal.model_validate({**PROPOSAL, "branch_suffix": "from-the-fork"})
    assert execute(build_plan(project.repo, project.config(), forked, 1)).published

    fake.fail(  # GitHub's validation failure shape
        422,
        method="POST",
        path="/pulls$",
        errors=[{"resource": "PullRequest", "code": "custom", "message": "No commits between"}],
    )
    last = ChangeProposal.model_validate({**PROPOSAL, "branch_suffix": "no-commits"})
    assert execute(build_plan(project.repo, project.config(), last, 1)).status == "failed"
    fake.rate_limit()
    fake.secondary_rate_limit(status=429, message="Too Many Requests")
    for _ in range(2):
        with pytest.raises(GitHubError):
            source.refresh()
    yield fake.api_requests(), reads


def test_every_answer_of_the_fake_matches_githubs_schemas(
    scenario: tuple[list[RecordedRequest], _Reads], description: Description
) -> None:
    requests, _ = scenario
    seen: set[tuple[str, int]] = set()
    problems = []
    for r in requests:
        op = description.operation(r.method, r.path)
        assert op is not None, f"the app called {r.method} {r.path}, which the extract lacks"
        assert not isinstance(r.response, RawBody)
        seen.add((op, r.status))
        for error in description.errors(description.response_schema(op, r.status), r.response):
            problems.append(f"{op} -> {r.status}: {re.sub(r'/[0-9]+/', '/N/', error)}")
    assert sorted(set(problems)) == []
    # the scenario covered every operation, and the error answers that matter
    assert {op for op, _ in seen} == set(description.operations)
    for expected in [
        ("POST /repos/{owner}/{repo}/pulls", 201),
        ("POST /repos/{owner}/{repo}/pulls", 422),
        ("GET /repos/{owner}/{repo}/issues/{issue_number}", 404),
        ("GET /repos/{owner}/{repo}/issues", 403),
        ("GET /repos/{owner}/{repo}/issues", 429),
    ]:
        assert expected in seen


def _query_value(raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        return int(raw) if raw.lstrip("-").isdigit() else raw
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    return raw


def test_every_request_of_the_app_is_valid_for_its_operation(
    scenario: tuple[list[RecordedRequest], _Reads], description: Description
) -> None:
    requests, _ = scenario
    problems = []
    sent_fields: set[str] = set()
    for r in requests:
        op_key = description.operation(r.method, r.path)
        assert op_key is not None
        op = description.operations[op_key]
        params = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
        for name, raw in r.query.items():
            if name not in params:
                problems.append(f"{op_key}: unknown query parameter {name}={raw!r}")
                continue
            schema = description.schema(params[name].get("schema", {}))
            for error in description.errors(schema, _query_value(raw, schema)):
                problems.append(f"{op_key}: query {name}={raw!r}: {error}")
        body = op["requestBody"]
        if body is None:
            if r.body is not None:
                problems.append(f"{op_key}: sent a body the operation does not take")
            continue
        if r.body is None:
            if body["required"]:
                problems.append(f"{op_key}: no body")
            continue
        schema = description.schema(body["schema"])
        problems += [f"{op_key}: body {e}" for e in description.errors(schema, r.body)]
        declared = description.resolve(body["schema"]).get("properties")
        if isinstance(r.body, dict) and declared is not None:
            unknown = set(r.body) - set(declared)
            problems += [f"{op_key}: body field {k!r} is not in the operation" for k in unknown]
            sent_fields |= {f"{op_key} {k}" for k in r.body}
    assert problems == []
    assert "POST /repos/{owner}/{repo}/pulls head_repo" in sent_fields  # the fork was covered


def test_every_field_the_app_reads_is_in_the_response_schema(
    scenario: tuple[list[RecordedRequest], _Reads], description: Description
) -> None:
    _, reads = scenario
    missing = []
    # the client reads an error answer the same way whatever its status (GitHub's message and,
    # when there are some, its errors): any of GitHub's two error shapes declares those fields
    error_shapes = [
        description.schema({"$ref": f"#/components/schemas/{name}"})
        for name in ("basic-error", "validation-error")
    ]
    for (op, status), paths in sorted(reads.paths.items()):
        schemas = [description.response_schema(op, status)]
        if status >= 400:
            schemas += error_shapes
        for path in sorted(paths):
            parts = [p for p in re.split(r"\.|(\[\])", path) if p]
            if not any(description.has_path(schema, parts) for schema in schemas):
                missing.append(f"{op} -> {status}: {path}")
    assert sorted(set(missing)) == []
    # the reads that matter were seen (the tracking works)
    issues = reads.paths[("GET /repos/{owner}/{repo}/issues", 200)]
    assert {"[].number", "[].labels[].name", "[].milestone.title", "[].pull_request"} <= issues
    assert "number" in reads.paths[("POST /repos/{owner}/{repo}/pulls", 201)]
    assert "default_branch" in reads.paths[("GET /repos/{owner}/{repo}", 200)]
