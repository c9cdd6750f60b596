"""Untrusted text on a terminal: control characters are shown escaped, never obeyed.

Fail 4 of the trust-boundary issue: ESC/OSC/BEL sequences in a GitHub issue title, a PR
title, a path or a configured label reached the terminal raw. Each CLI output is checked here
against a loopback GitHub whose issue titles carry such sequences; the TUI never reads them
as markup.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.core.textsafe import CLEAR_LINE, control_chars, safe, safe_block, terminal_safe
from engine.publish.store import Store
from tests.conftest import git
from tests.github_fake import FAKE_TOKEN, FakeGitHub

#: an OSC 8 hyperlink, an OSC 52 clipboard write, a screen clear, a C1 CSI and a bidi override
EVIL = "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\x1b]52;c;cGF3bmVk\x07\x1b[2J\x9b1m\u202e"
MARKUP = "[b red]x[/] [@click=app.quit]q[/]"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def no_raw_controls(text: str) -> bool:
    return not any(c in text for c in RAW)


def test_sanitiser_escapes_and_keeps_what_it_should() -> None:
    assert safe(EVIL).startswith("\\x1b]8;;https://evil.example\\x07click")
    assert no_raw_controls(safe(EVIL)) and "\\u202e" in safe(EVIL)
    assert safe("a\nb\tc") == "a\\x0ab\\x09c"  # one line: newline and tab too
    assert safe_block("a\nb\tc\rd") == "a\nb\tc\\x0dd"
    assert safe("lone \udc80 surrogate") == "lone \\udc80 surrogate"
    assert safe("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert terminal_safe(f"{CLEAR_LINE}progress {EVIL}").startswith(CLEAR_LINE + "progress \\u001b")
    assert control_chars("x\x1by\u202e") == ["\\x1b", "\\u202e"]
    data = {"title": EVIL + "\udc80"}
    shown = terminal_safe(json.dumps(data, ensure_ascii=False))
    assert no_raw_controls(shown) and json.loads(shown) == data  # JSON stays JSON


@pytest.fixture
def evil_github(
    git_repo: Path, github_fake: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeGitHub:
    github_fake.connect_repo(git_repo)
    config = github_fake.write_config(tmp_path / "c.toml")
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(config))
    monkeypatch.setenv("GH_ENTERPRISE_TOKEN", FAKE_TOKEN)
    github_fake.add_issue(f"Add health {EVIL}", f"body {EVIL}", labels=[f"bug{EVIL}"])
    return github_fake


def test_issues_and_prompt_show_a_hostile_title_escaped(
    git_repo: Path, evil_github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = ["--repo", str(git_repo)]
    assert cli_main(["issues", *repo]) == 0
    out = capsys.readouterr()
    assert "Add health \\x1b]8;;https://evil.example\\x07click" in out.out
    assert no_raw_controls(out.out + out.err)
    assert cli_main(["issues", "--json", *repo]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["issues"][0]["title"] == f"Add health {EVIL}"  # JSON keeps the exact text
    cli_main(["prompt", "1", *repo])
    out = capsys.readouterr()
    assert "Add health" in out.out and no_raw_controls(out.out + out.err)


def test_publish_plan_history_check_and_labels_show_escapes(
    git_repo: Path,
    evil_github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (git_repo / ".agent-tui.toml").write_text(
        '[publish]\nlabels = ["ok\\u001b]52;c;eA==\\u0007"]\n'  # harmless: applies untrusted
    )
    git(git_repo, "add", ".agent-tui.toml")
    git(git_repo, "commit", "-qm", "config")
    proposal = {
        "branch_suffix": "health",
        "commit_message": "feat: add health",
        "pr_title": f"feat: add health {EVIL}",
        "pr_body": f"Closes #1\n{EVIL}",
        "files": [{"path": f"app/x{EVIL[:5]}.py", "content": "x = 1\n"}],
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(proposal))
    repo = ["--repo", str(git_repo)]
    assert cli_main(["check", str(path), "--issue", "1", *repo]) == 1
    out = capsys.readouterr()
    assert "message-control-char" in out.out and "path-control-char" in out.out
    assert no_raw_controls(out.out + out.err)

    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code = cli_main(["publish", str(path), "--issue", "1", *repo])
    out = capsys.readouterr()
    assert code != 0 and not evil_github.open_pulls()
    assert "pr_title holds control" in out.err and no_raw_controls(out.out + out.err)
    # a clean proposal: the plan is shown, with the configured label escaped
    clean = {**proposal, "pr_title": "feat: add health", "pr_body": "Closes #1"}
    path.write_text(json.dumps({**clean, "files": [{"path": "app/x.py", "content": "x = 1\n"}]}))
    code = cli_main(["publish", str(path), "--issue", "1", *repo])
    out = capsys.readouterr()
    assert code != 0 and not evil_github.open_pulls()  # not confirmed
    assert "ok\\x1b]52;c;eA==\\x07" in out.err and no_raw_controls(out.out + out.err)

    store = Store.for_repo(git_repo)
    store.record_generation(issue_number=1, issue_title=f"t {EVIL}", detail=f"d {EVIL}")
    assert cli_main(["history", *repo]) == 0
    out = capsys.readouterr()
    assert "t \\x1b]8;;" in out.out and no_raw_controls(out.out + out.err)


def test_check_survives_a_lone_surrogate_path(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        '{"branch_suffix": "x", "commit_message": "feat: x", "pr_title": "feat: x", '
        '"pr_body": "Closes #1", "files": [{"path": "a\\udc80.py", "content": "x = 1\\n"}]}'
    )
    assert cli_main(["check", str(path), "--issue", "1", "--repo", str(git_repo)]) == 1
    out = capsys.readouterr()
    assert "path-control-char" in out.out and "\\udc80" in out.out


async def test_tui_shows_markup_in_untrusted_text_literally(git_repo: Path) -> None:
    from textual.widgets import DataTable

    from engine.core.config import load_config
    from tui.app import AgentTuiApp
    from tui.screens.history import HistoryScreen

    (git_repo / ".agent-tui.toml").write_text('[publish]\ntest_command = "make"\n')
    store = Store.for_repo(git_repo)
    store.record_generation(issue_number=1, issue_title=MARKUP, detail=f"[red]{EVIL}")
    app = AgentTuiApp(git_repo, load_config(git_repo))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert any("agent-tui trust" in n and "publish.test_command" in n for n in notes)
        app.action_history()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, HistoryScreen)
        table = app.screen.query_one("#history", DataTable)
        cells = [str(getattr(c, "plain", c)) for c in table.get_row_at(0)]
        assert f"#1 {MARKUP}" in cells  # literal, not bold red, no click action
        assert any(c.startswith("[red]\\x1b]8;;") for c in cells)


def test_git_writers_refuse_control_characters(git_repo: Path) -> None:
    from engine.publish import gitops

    head = git(git_repo, "rev-parse", "HEAD").strip()
    with pytest.raises(gitops.GitError, match="control"):
        gitops.commit_all(git_repo, ["README.md"], f"feat: x\n\n{EVIL}")
    for name in ("agent/x\x1b[2J", "agent/\u202ex", "-agent"):
        with pytest.raises(gitops.GitError, match="refusing the branch name"):
            gitops.create_branch(git_repo, name, head)
    assert git(git_repo, "rev-parse", "HEAD").strip() == head


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("commit_message", "feat: x\n\nAgent-Tui-Model: gpt-9", "trailer"),
        ("commit_message", "feat: x\n\nSigned-off-by: Someone <s@x>", "trailer"),
        ("pr_title", "feat: x\x1b]8;;http://evil\x07", "pr_title holds control"),
        ("pr_body", "Closes #1\n\u202eevil", "pr_body holds control"),
    ],
)
def test_publish_plan_refuses_forged_trailers_and_control_characters(
    git_repo: Path, field: str, value: str, error: str
) -> None:
    from engine.core.config import load_config
    from engine.core.models import ChangeProposal
    from engine.publish.plan import build_plan

    data: dict[str, object] = {
        "branch_suffix": "x",
        "commit_message": "feat: x",
        "pr_title": "feat: x",
        "pr_body": "Closes #1",
        "files": [{"path": "x.py", "content": "x = 1\n"}],
        field: value,
    }
    plan = build_plan(git_repo, load_config(git_repo), ChangeProposal.model_validate(data), 1)
    assert any(error in e for e in plan.errors), plan.errors
    assert not plan.ready
