"""The trust boundary's weak points: check and publish agree, sizes are capped, bad input
never ends in a traceback (hypothesis fuzz), doctor and the test command keep keys to
themselves."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.cli import main as cli_main
from engine.core.config import load_config
from engine.core.errors import AgentTuiError, ConfigError
from engine.core.models import MAX_ISSUE_BODY, ChangeProposal, Issue
from engine.core.proposal_io import load_proposal_file, proposal_from_data
from engine.issues.forge.local import LocalIssueSource
from engine.publish import gitops
from engine.review.checks.orchestrator import run_checks
from engine.review.checks.registry import has_errors
from engine.review.diff import diff_proposal

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GOOD: dict[str, Any] = {
    "branch_suffix": "health",
    "commit_message": "feat: add health",
    "pr_title": "feat: add health",
    "pr_body": "Closes #1",
    "files": [{"path": "app/health.py", "content": "x = 1\n"}],
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def _path(p: str) -> dict[str, Any]:
    return _with(files=[{"path": p, "content": "x = 1\n"}])


# ----------------------------------------------------------------------------------------------
# check and publish agree


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (_path("app/m\u0430in.py"), "path-not-portable"),  # a Cyrillic а
        (_path("app/my file.py"), "path-not-portable"),
        (_path("-rf.py"), "path-segment-start"),
        (_path("/".join("abcdefghijklm") + ".py"), "path-too-deep"),
        (_path("app/" + "s" * 70 + ".py"), "path-too-long"),
        (_with(pr_title=""), "pr-title-length"),
        (_with(commit_message="feat: " + "c" * 120), "commit-message-length"),
        (_with(branch_suffix="Not_Valid"), "branch-suffix-invalid"),
    ],
)
def test_what_publish_refuses_check_reports_with_its_code(
    git_repo: Path, data: dict[str, Any], code: str
) -> None:
    with pytest.raises(ValidationError):
        ChangeProposal.model_validate(data)  # what publishing validates against
    findings = run_checks(proposal_from_data(data), git_repo, 1)
    assert code in {f.code for f in findings if f.severity == "error"}


def test_profile_without_branch_rules_still_checks_the_branch(git_repo: Path) -> None:
    from engine.review.checks.registry import enabled_for_profile

    enabled = enabled_for_profile(["closes-issue"])
    findings = run_checks(
        proposal_from_data(_with(branch_suffix="Bad_")), git_repo, 1, enabled=enabled
    )
    assert "branch-suffix-invalid" in {f.code for f in findings}


_SEGMENTS = st.one_of(
    st.text(alphabet="ab_-. \u0430é", max_size=3),
    st.builds(lambda n, c: c + "x" * n, st.integers(60, 70), st.sampled_from(["", ".", "-"])),
)


@FUZZ
@given(
    path=st.lists(_SEGMENTS, min_size=1, max_size=14).map("/".join),
    title=st.one_of(st.just("feat: x"), st.text(max_size=130)),
    commit=st.one_of(st.just("feat: x"), st.text(max_size=130)),
)
def test_publishable_by_check_means_valid_for_publish(
    git_repo: Path, path: str, title: str, commit: str
) -> None:
    data = _with(
        files=[{"path": path, "content": "x = 1\n"}], pr_title=title, commit_message=commit
    )
    findings = run_checks(proposal_from_data(data), git_repo, 1)
    if not has_errors(findings):
        ChangeProposal.model_validate(data)  # publish's own validation agrees


@pytest.mark.parametrize(
    "path",
    ["a" * 64, "a" * 65, "." + "a" * 64, "." + "a" * 65, "/".join("abcdefghijkl"), "x" * 200],
)
def test_check_and_publish_agree_at_the_path_bounds(git_repo: Path, path: str) -> None:
    data = _path(path)
    try:
        ChangeProposal.model_validate(data)
        valid = True
    except ValidationError:
        valid = False
    findings = run_checks(proposal_from_data(data), git_repo, 1)
    assert valid is not has_errors(findings), [f.code for f in findings]


# ----------------------------------------------------------------------------------------------
# sizes


def test_a_huge_file_is_checked_within_two_seconds(git_repo: Path, tmp_path: Path) -> None:
    content = ("token = 'ghp_" + "a" * 36 + "'\n") * 1_200_000  # ~57 MB
    path = tmp_path / "big.json"
    path.write_text(json.dumps(_with(files=[{"path": "big.py", "content": content}])))
    proposal = load_proposal_file(path)
    start = time.perf_counter()
    findings = run_checks(proposal, git_repo, 1)
    diff = diff_proposal(proposal, git_repo)  # what `check` prints after the findings
    elapsed = time.perf_counter() - start
    assert diff.files[0].added == 1_200_000
    assert "file-too-large" in {f.code for f in findings}
    assert elapsed < 2.0, f"check took {elapsed:.2f} s"


@pytest.mark.parametrize(("n_files", "lines"), [(100, 5_000), (20_000, 1)])
def test_many_files_are_checked_within_two_seconds(
    git_repo: Path, n_files: int, lines: int
) -> None:
    content = ("api_token = 'ghp_" + "a" * 36 + "'\n") * lines  # a secret on every line
    files = [{"path": f"f{i}.py", "content": content} for i in range(n_files)]
    proposal = proposal_from_data(_with(files=files))
    start = time.perf_counter()
    codes = {f.code for f in run_checks(proposal, git_repo, 1)}
    diff_proposal(proposal, git_repo)
    elapsed = time.perf_counter() - start
    assert codes & {"total-too-large", "too-many-files"}
    assert elapsed < 2.0, f"check took {elapsed:.2f} s"


def test_an_issue_body_is_capped_before_anything_reads_it() -> None:
    issue = Issue(number=1, title="t" * 5000, body="b" * 10_000_000)
    assert len(issue.body) < MAX_ISSUE_BODY + 100 and issue.body.endswith("by agent-tui]")
    assert len(issue.title) == 1024


# ----------------------------------------------------------------------------------------------
# no tracebacks on bad input


def test_deeply_nested_json_is_a_clean_error(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert cli_main(["check", str(path), "--issue", "1", "--json", "--repo", str(git_repo)]) == 7
    out = capsys.readouterr()
    assert json.loads(out.out)["ok"] is False and "nested too deeply" in out.err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "p.json", "--issue", "99999999999999999999"],
        ["publish", "p.json", "--issue", "99999999999999999999"],
        ["history", "--issue", "99999999999999999999"],
        ["history", "--show", "99999999999999999999"],
        ["prompt", "99999999999999999999"],
        ["generate", "99999999999999999999"],
        ["batch", "--issues", "3,99999999999999999999"],
    ],
)
def test_a_huge_number_is_a_usage_error(
    argv: list[str], git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main([*argv, "--repo", str(git_repo)])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(
    blob=st.one_of(
        st.binary(max_size=200),
        _JSONISH.map(lambda d: json.dumps(d).encode()),
        st.fixed_dictionaries({k: _JSONISH for k in GOOD}, optional={"extra": _JSONISH}).map(
            lambda d: json.dumps(d).encode()
        ),
        st.builds(
            lambda p, c: json.dumps(_with(files=[{"path": p, "content": c}])).encode(),
            st.text(max_size=30),
            st.text(max_size=60),
        ),
    )
)
def test_fuzzed_proposal_files_end_cleanly(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], blob: bytes
) -> None:
    path = tmp_path / "fuzz.json"
    path.write_bytes(blob)
    code = cli_main(["check", str(path), "--issue", "1", "--json", "--repo", str(git_repo)])
    out = capsys.readouterr()
    assert code in (0, 1, 7)
    json.loads(out.out)  # --json stdout is JSON whatever happened


@FUZZ
@given(text=st.text(max_size=300))
def test_fuzzed_config_files_end_cleanly(
    git_repo: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    (git_repo / ".agent-tui.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(git_repo)
    except ConfigError:
        pass
    assert cli_main(["models", "--json", "--repo", str(git_repo)]) in (0, 7)
    json.loads(capsys.readouterr().out)


_FRONT = st.dictionaries(
    st.sampled_from(["title", "labels", "number", "updated_at", "assignees", "state", "x"]),
    _JSONISH,
    max_size=5,
)


@FUZZ
@given(front=_FRONT, body=st.text(max_size=100), raw=st.text(max_size=200))
def test_fuzzed_issue_files_end_cleanly(
    git_repo: Path, capsys: pytest.CaptureFixture[str], front: dict[str, Any], body: str, raw: str
) -> None:
    folder = git_repo / ".agent-tui" / "issues"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    (folder / "001-a.md").write_text(
        f"---\n{json.dumps(front)}\n---\n{body}", errors="surrogatepass"
    )
    (folder / "002-b.md").write_text(raw, errors="surrogatepass")
    try:
        LocalIssueSource(git_repo).list_issues()
    except AgentTuiError:
        pass
    assert cli_main(["issues", "--json", "--repo", str(git_repo)]) in (0, 7)
    json.loads(capsys.readouterr().out)


# ----------------------------------------------------------------------------------------------
# doctor and the test command keep keys to themselves


KEY = "sk-live-" + "k3yV4lu3" * 4


@pytest.mark.parametrize(
    "profile",
    [
        f'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "{KEY}"\n',
        f'base_url = "http://admin:{KEY}@127.0.0.1:9/v1"\n',
    ],
)
def test_doctor_never_prints_a_key_in_the_config(
    git_repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    profile: str,
) -> None:
    config = tmp_path / "user.toml"
    config.write_text(f'[models.srv]\nbackend = "openai"\nmodel = "m"\n{profile}')
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    assert cli_main(["doctor", "--json", "--repo", str(git_repo)]) == 7
    out = capsys.readouterr()
    assert KEY not in out.out + out.err and "k3yV4lu3" not in out.out + out.err
    assert "api_key_env" in out.err


def test_test_command_environment_has_no_credentials(
    git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "MYLLM": "configured-key-value-1",  # named by a profile's api_key_env
        "OPENAI_API_KEY": "openai-key-value-2",
        "DB_PASSWORD": "db-password-value-3",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value-4",
        "GH_TOKEN": "gh-token-value-5",
        "GH_ENTERPRISE_TOKEN": "ghe-token-value-6",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    run = gitops.run_test_command(git_repo, "env", 30, drop=("MYLLM",))
    assert run.passed
    for name, value in secrets.items():
        assert value not in run.output, name
    assert "PATH=" in run.output


def test_publish_drops_every_configured_api_key_env(git_repo: Path, tmp_path: Path) -> None:
    from engine.publish.plan import key_envs

    config = tmp_path / "user.toml"
    config.write_text(
        '[models.a]\nbackend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
        'api_key_env = "MYLLM"\n'
    )
    assert key_envs(load_config(git_repo, user_config=config)) == ("MYLLM",)
    assert os.environ.get("MYLLM") is None
