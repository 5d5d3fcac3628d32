"""Releases of the project side by side: this working tree committed as release N in a scratch git repository, the
releases after it committed on top, each checked out where its commands run."""

from __future__ import annotations

import subprocess
from pathlib import Path

from app.settings import PROJECT_ROOT

# Text to replace in a file: its path, and (old, new).
Edits = dict[str, tuple[str, str]]
_AS_AUTHOR = ["-c", "user.name=release test", "-c", "user.email=release@example.com"]


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", *_AS_AUTHOR, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


class Releases:
    """A scratch repository whose first commit is this working tree (uncommitted changes included) as release N."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.repo = folder / "repo"
        self.repo.mkdir(parents=True)
        files = git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=PROJECT_ROOT)
        listed = [name for name in files.split("\0") if name and (PROJECT_ROOT / name).is_file()]
        subprocess.run(["cp", "--parents", "-t", str(self.repo), *listed], cwd=PROJECT_ROOT, check=True)
        git("init", "--quiet", cwd=self.repo)
        self.n = self.commit("release N", {})

    def commit(
        self, message: str, files: dict[str, str | None], edits: dict[str, tuple[str, str]] | None = None
    ) -> str:
        """Write `files` (None: delete), replace text in `edits` (path: (old, new)), commit; the commit's id."""
        for name, text in files.items():
            path = self.repo / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        for name, (old, new) in (edits or {}).items():
            path = self.repo / name
            before = path.read_text()
            assert old in before, f"{name} has no {old!r}"
            path.write_text(before.replace(old, new))
        git("add", "--all", cwd=self.repo)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.repo)
        return git("rev-parse", "HEAD", cwd=self.repo)

    def checkout(self, commit: str, name: str) -> Path:
        """The release at `commit`, in a worktree of its own: where its `python -m app` runs."""
        path = self.folder / name
        git("worktree", "add", "--quiet", "--detach", str(path), commit, cwd=self.repo)
        return path
