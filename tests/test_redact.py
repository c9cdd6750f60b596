"""One redaction path: a credential echoed in an error is never printed, shown or stored."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.core.errors import BackendError, GitHubError
from engine.core.events import BackendFailed
from engine.core.redact import MASK, redact, register
from engine.publish.store import Store
from tests.github_fake import FAKE_TOKEN, FakeGitHub

PROPOSAL = {
    "branch_suffix": "health-endpoint",
    "commit_message": "feat: add a health endpoint",
    "pr_title": "feat: add a health endpoint",
    "pr_body": "Adds it.\n\nCloses #1",
    "files": [{"path": "app/health.py", "content": "def health() -> bool:\n    return True\n"}],
}


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: token {t}",
        '{{"headers": {{"Authorization": "Bearer {t}"}}}}',
        "remote: https://x-access-token:{t}@github.com/o/r.git denied",
        "sent Basic {b}",
        "the token is {t}.",
    ],
)
def test_current_credentials_are_removed(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "q7Zr0pLm3Xv9Tk2WnB5y"  # no known token shape: only the environment says it
    monkeypatch.setenv("MY_SERVER_API_KEY", secret)
    basic = base64.b64encode(f"x-access-token:{secret}".encode()).decode()
    out = redact(text.format(t=secret, b=basic))
    assert secret not in out and basic not in out and MASK in out


def test_known_shapes_and_registered_values_are_removed() -> None:
    register("registered-credential-42")
    text = (
        "ghp_"
        + "a" * 36
        + " github_pat_"
        + "B" * 30
        + " sk-"
        + "c" * 24
        + " registered-credential-42 https://bob:hunter22@example.com/x"
    )
    out = redact(text)
    assert "aaaa" not in out and "BBBB" not in out and "cccc" not in out
    assert "registered-credential-42" not in out and "hunter22" not in out
    assert "bob:***@example.com" in out
    # ordinary words stay
    assert redact("the token provided is invalid") == "the token provided is invalid"


def test_errors_and_failure_events_are_redacted_at_birth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GH_TOKEN", FAKE_TOKEN)
    err = GitHubError(f"echo {FAKE_TOKEN}", hint=FAKE_TOKEN, github_message=FAKE_TOKEN)
    assert FAKE_TOKEN not in err.render() + err.github_message + str(err)
    assert FAKE_TOKEN not in BackendError(f"401: {FAKE_TOKEN}").render()
    event = BackendFailed(message=f"server said Bearer {FAKE_TOKEN}", hint=FAKE_TOKEN)
    assert FAKE_TOKEN not in event.message + event.hint


def test_github_422_echoing_the_token_is_not_printed_or_stored(
    git_repo: Path,
    github_fake: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Fail 3: a loopback GitHub answers 422 quoting the Authorization header it received."""
    github_fake.connect_repo(git_repo)
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(github_fake.write_config(tmp_path / "c.toml")))
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", FAKE_TOKEN)
    github_fake.add_issue("Add a health endpoint")
    basic = base64.b64encode(f"x-access-token:{FAKE_TOKEN}".encode()).decode()
    github_fake.fail(
        422,
        method="POST",
        path="/pulls$",
        message=f"Validation Failed for Authorization: token {FAKE_TOKEN}",
        errors=[{"message": f"bad header {FAKE_TOKEN} / Basic {basic}", "code": "custom"}],
        times=5,
    )
    proposal = tmp_path / "p.json"
    proposal.write_text(json.dumps(PROPOSAL))
    repo = ["--repo", str(git_repo)]
    code = cli_main(["publish", str(proposal), "--issue", "1", "--yes", *repo])
    printed = capsys.readouterr()
    assert code == 7, printed.err
    assert any(r.authenticated for r in github_fake.requests)  # it was sent, to its host
    assert "GitHub answered 422" in printed.out + printed.err

    outputs = [printed.out + printed.err]
    for args in (["history"], ["history", "--jobs"], ["history", "--show", "1"]):
        assert cli_main([*args, *repo]) == 0
        outputs.append("".join(capsys.readouterr()))
    cli_main(["sync", "--all", "--json", *repo])
    outputs.append("".join(capsys.readouterr()))
    assert "422" in outputs[-1]

    store = Store.for_repo(git_repo)
    (job,) = store.jobs()
    (record,) = store.generations()
    assert "422" in job.last_error and "422" in record.detail
    stored = [job.last_error, record.detail]
    db_bytes = b"".join(p.read_bytes() for p in store.path.parent.iterdir() if p.is_file())
    assert b"422" in db_bytes
    for text in [*outputs, *stored]:
        assert FAKE_TOKEN not in text and basic not in text
    assert FAKE_TOKEN.encode() not in db_bytes and basic.encode() not in db_bytes
