"""A ready-to-try demo: a small FastAPI backend repository, its bare ``origin`` and local issues.

Why: the first thing a new user runs is ``agent-tui demo``; it must show the whole flow (pick an
issue, generate, preview, publish) without a GitHub account, a token or a repository of their
own. The repository is shaped like the Backend Dev Agent's project structure (the default
prompt profile), so the model's answers fit it; publishing pushes to the bare remote, and the
pull request lands in the outbox because there is no GitHub to open it on.

Everything is created with real ``git`` commands; nothing is downloaded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import RepoError
from engine.core.gitcmd import GitError, run_git

REPO_NAME = "backend"
REMOTE_NAME = "origin.git"
ISSUES_DIR = Path(".agent-tui") / "issues"
_MARKER = ISSUES_DIR / "001-health-endpoint.md"

_FILES: dict[str, str] = {
    "README.md": """\
# demo backend

A small FastAPI service used by `agent-tui demo`. Run it with:

```bash
pip install -r requirements.txt
uvicorn app.main:app --reload
```

Tests: `pytest -q`.
""",
    ".gitignore": """\
__pycache__/
*.pyc
.env
.venv/
*.db
""",
    "requirements.txt": """\
fastapi>=0.110
uvicorn>=0.29
sqlalchemy>=2.0
pydantic>=2.6
pydantic-settings>=2.2
httpx>=0.27
pytest>=8
""",
    "app/__init__.py": "",
    "app/main.py": '''\
"""FastAPI application entry point."""

from fastapi import FastAPI

from app.api.v1.endpoints import items
from app.config import settings
from app.database import Base, engine

Base.metadata.create_all(bind=engine)

app = FastAPI(title=settings.app_name)
app.include_router(items.router, prefix="/api/v1/items", tags=["items"])
''',
    "app/config.py": '''\
"""Settings via pydantic-settings (values come from the environment or .env)."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Application settings."""

    model_config = SettingsConfigDict(env_file=".env")

    app_name: str = "demo-backend"
    database_url: str = "sqlite:///./demo.db"


settings = Settings()
''',
    "app/database.py": '''\
"""SQLAlchemy engine and session."""

from collections.abc import Iterator

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from app.config import settings
from app.models.base import Base

engine = create_engine(settings.database_url, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(bind=engine, autoflush=False)

__all__ = ["Base", "SessionLocal", "engine", "get_db"]


def get_db() -> Iterator[Session]:
    """Yield a database session and close it afterwards."""
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()
''',
    "app/models/__init__.py": '''\
"""SQLAlchemy ORM models."""

from app.models.base import Base
from app.models.item import Item

__all__ = ["Base", "Item"]
''',
    "app/models/base.py": '''\
"""Base model with id, created_at, updated_at."""

from datetime import datetime

from sqlalchemy import DateTime, Integer, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Every model has an id and creation/update times."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )
''',
    "app/models/item.py": '''\
"""The Item model."""

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class Item(Base):
    """Something in the catalogue."""

    __tablename__ = "items"

    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")
''',
    "app/schemas/__init__.py": "",
    "app/schemas/item.py": '''\
"""Pydantic schemas for items."""

from pydantic import BaseModel, ConfigDict


class ItemCreate(BaseModel):
    """Request body to create an item."""

    name: str
    description: str = ""


class ItemRead(ItemCreate):
    """An item as returned by the API."""

    model_config = ConfigDict(from_attributes=True)

    id: int
''',
    "app/api/__init__.py": "",
    "app/api/v1/__init__.py": "",
    "app/api/v1/endpoints/__init__.py": "",
    "app/api/v1/endpoints/items.py": '''\
"""Item endpoints."""

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy.orm import Session

from app.database import get_db
from app.models.item import Item
from app.schemas.item import ItemCreate, ItemRead

router = APIRouter()


@router.get("/", response_model=list[ItemRead])
def list_items(db: Session = Depends(get_db)) -> list[ItemRead]:
    """List every item."""
    return [ItemRead.model_validate(item) for item in db.query(Item).all()]


@router.post("/", response_model=ItemRead, status_code=status.HTTP_201_CREATED)
def create_item(body: ItemCreate, db: Session = Depends(get_db)) -> ItemRead:
    """Create an item."""
    item = Item(name=body.name, description=body.description)
    db.add(item)
    db.commit()
    db.refresh(item)
    return ItemRead.model_validate(item)


@router.get("/{item_id}", response_model=ItemRead)
def get_item(item_id: int, db: Session = Depends(get_db)) -> ItemRead:
    """One item by id."""
    item = db.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="item not found")
    return ItemRead.model_validate(item)
''',
    "tests/__init__.py": "",
    "tests/test_items.py": '''\
"""Tests of the item endpoints."""

from fastapi.testclient import TestClient

from app.main import app

client = TestClient(app)


def test_create_and_get_item() -> None:
    created = client.post("/api/v1/items/", json={"name": "pen"})
    assert created.status_code == 201
    item_id = created.json()["id"]
    fetched = client.get(f"/api/v1/items/{item_id}")
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "pen"


def test_missing_item_is_404() -> None:
    assert client.get("/api/v1/items/999999").status_code == 404
''',
}

#: (file name, number, title, labels, body)
DEMO_ISSUES: tuple[tuple[str, int, str, list[str], str], ...] = (
    (
        "001-health-endpoint.md",
        1,
        "Add a /health endpoint",
        ["enhancement", "good first issue"],
        "Load balancers need a cheap liveness probe.\n\n"
        'Add `GET /health` returning `{"status": "ok"}` with status 200, in a new file\n'
        "`app/api/v1/endpoints/health.py`, include its router in `app/main.py`, and add a\n"
        "test in `tests/test_health.py`.\n",
    ),
    (
        "002-user-model-crud.md",
        2,
        "Add a User model and CRUD",
        ["enhancement"],
        "We need users. Add a `User` model (email unique, full_name, hashed_password,\n"
        "is_active) inheriting from `Base`, Pydantic schemas (never return the password),\n"
        "CRUD functions in `app/crud/user.py`, and endpoints under `/api/v1/users`\n"
        "(create, list, get by id, delete) with tests.\n",
    ),
    (
        "003-item-pagination.md",
        3,
        "Paginate GET /api/v1/items",
        ["enhancement", "api"],
        "Listing items returns everything. Add `skip` (default 0) and `limit` (default 20,\n"
        "max 100) query parameters to `list_items` in `app/api/v1/endpoints/items.py`,\n"
        "and a test.\n",
    ),
    (
        "004-item-update-delete.md",
        4,
        "Update and delete items",
        ["enhancement", "api"],
        "Items can be created but never changed. Add `PATCH /api/v1/items/{item_id}`\n"
        "(partial update with an `ItemUpdate` schema) and `DELETE /api/v1/items/{item_id}`\n"
        "(204; 404 when missing), with tests.\n",
    ),
    (
        "005-cors-settings.md",
        5,
        "Configure CORS from settings",
        ["config"],
        "The frontend runs on another origin. Add `cors_origins: list[str]` to `Settings`\n"
        '(default `["http://localhost:3000"]`) and install FastAPI\'s `CORSMiddleware` in\n'
        "`app/main.py` with those origins.\n",
    ),
)


@dataclass(frozen=True)
class DemoRepo:
    """Where the demo lives."""

    root: Path
    """The directory holding both the working repository and the bare remote."""
    repo: Path
    """The working repository (open agent-tui here)."""
    remote: Path
    """The bare repository that is the working repository's ``origin``."""
    issues: tuple[Path, ...]
    """The local Markdown issues."""
    reused: bool = False
    """An existing demo repository was found and left as it was."""


def _git(cwd: Path, *args: str) -> str:
    try:
        out = run_git(cwd, *args, check=False)
    except GitError as exc:  # git missing, or cwd gone
        raise RepoError(exc.message, hint="install git and run `agent-tui demo` again") from None
    if out.returncode != 0:
        raise RepoError(
            f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip() or out.stdout.strip()}",
            hint="check that git works (`git --version`) and the directory is writable",
        )
    return out.stdout


def issue_text(number: int, title: str, labels: list[str], body: str) -> str:
    """A local Markdown issue: YAML front matter (number, title, labels), then the body.

    Args:
        number: the issue number.
        title: its title.
        labels: its labels.
        body: Markdown text.

    Returns:
        The file's text.
    """
    quoted = ", ".join(f'"{label}"' for label in labels)
    safe_title = title.replace('"', '\\"')
    return f'---\nnumber: {number}\ntitle: "{safe_title}"\nlabels: [{quoted}]\n---\n\n{body}'


def _has_identity(repo: Path) -> bool:
    return bool(run_git(repo, "config", "user.email", check=False).stdout.strip())


#: The demo repository's own config: the repository layer wins over the user's config, so
#: the demo runs on the embedded model with its local issues whatever else is configured.
DEMO_CONFIG = """\
# agent-tui demo: the embedded model, the shipped prompt profile and the local issues in
# .agent-tui/issues/, whatever your own config says (this file is the repository's layer).
default_model = "gemma3-270m"
default_prompt = "backend-dev"

[github]
issues = "local"
remote = "origin"

[publish]
remote = "origin"
base = "main"
"""


def create_demo(directory: Path | None = None) -> DemoRepo:
    """Create the demo repository, its bare ``origin`` and its issues.

    The working repository is ``<directory>/backend`` and the remote ``<directory>/origin.git``.
    When ``<directory>/backend`` already is a demo repository it is reused untouched, so running
    ``agent-tui demo --dir D`` twice continues where the user left off.

    Args:
        directory: where to create it (created when missing); default: a new temporary
            directory.

    Returns:
        Where everything is.

    Raises:
        RepoError: the directory holds something else, or git fails.
    """
    root = (
        Path(tempfile.mkdtemp(prefix="agent-tui-demo-"))
        if directory is None
        else directory.expanduser().resolve()
    )
    repo = root / REPO_NAME
    remote = root / REMOTE_NAME
    if repo.exists():
        if (repo / _MARKER).is_file() and (repo / ".git").exists() and remote.is_dir():
            issues = tuple(sorted((repo / ISSUES_DIR).glob("*.md")))
            return DemoRepo(root, repo, remote, issues, reused=True)
        raise RepoError(
            f"{repo} already exists and is not an agent-tui demo repository",
            hint="pick another directory with --dir, or remove that one",
        )
    if remote.exists():
        raise RepoError(
            f"{remote} already exists",
            hint="pick another directory with --dir, or remove that one",
        )
    try:
        repo.mkdir(parents=True)
    except OSError as exc:
        raise RepoError(
            f"cannot create {repo}: {exc.strerror}", hint="pick a writable directory with --dir"
        ) from None

    _git(root, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(repo, "init", "-q", "-b", "main")
    if not _has_identity(repo):
        # A fresh machine may have no git identity; the demo still has to commit and publish.
        _git(repo, "config", "user.name", "agent-tui demo")
        _git(repo, "config", "user.email", "demo@agent-tui.invalid")
    for rel, text in _FILES.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    issues_dir = repo / ISSUES_DIR
    issues_dir.mkdir(parents=True, exist_ok=True)
    issue_paths = []
    for name, number, title, labels, body in DEMO_ISSUES:
        path = issues_dir / name
        path.write_text(issue_text(number, title, labels, body), encoding="utf-8")
        issue_paths.append(path)
    (repo / ".agent-tui.toml").write_text(DEMO_CONFIG, encoding="utf-8")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Initial FastAPI backend")
    _git(repo, "remote", "add", "origin", str(remote))
    _git(repo, "push", "-q", "-u", "origin", "main")
    return DemoRepo(root, repo, remote, tuple(issue_paths))
