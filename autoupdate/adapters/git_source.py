"""The configuration repository through GitPython: clone, fetch the tracked branch, diff, read."""
from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import git
from git.exc import BadName, GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from ..model import Revision
from ..ports import SourceError


# A server that wants credentials gets none and git fails at once, rather than asking on the
# admin's terminal (`autoupdate plan`) and holding the command until the fetch timeout.
_NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0"}

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]*)(?P<password>:[^/@\s]*)?@",
                       re.IGNORECASE)


def _hide(m: re.Match) -> str:
    if m["password"] is not None:
        return f"{m['scheme']}{m['user']}:***@"
    # https://TOKEN@host (how GitHub and GitLab take a token) hides it; ssh://git@host stays.
    return f"{m['scheme']}***@" if m["scheme"].lower().startswith("http") else m[0]


def without_password(text: str) -> str:
    """https://user:token@host/repo -> https://user:***@host/repo: a token in the repository URL
    never reaches a log line, an error or a Slack message (git itself keeps it in the clone's
    config, under the state directory, 0700)."""
    return _USERINFO.sub(_hide, text)


def _revision(commit) -> Revision:
    return Revision(sha=commit.hexsha, summary=str(commit.summary), author=str(commit.author),
                    committed_at=float(commit.committed_date))


class GitSource:
    """A clone under the state directory, fetched from `url`; `branch` is the tracked one."""

    def __init__(self, url: str, branch: str, workdir: Path, timeout: float = 120.0):
        self.url = url
        self.shown = without_password(url)  # the URL as messages show it
        self.branch = branch
        self.workdir = Path(workdir)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._repo: git.Repo | None = None

    @classmethod
    def from_settings(cls, settings) -> "GitSource":
        return cls(settings.repository.url, settings.repository.branch, settings.repo_workdir)

    def _open(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        try:
            repo = git.Repo(self.workdir)
            if repo.remotes and repo.remotes.origin.url != self.url:
                repo.remotes.origin.set_url(self.url)
        except (InvalidGitRepositoryError, NoSuchPathError):
            try:
                self.workdir.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SourceError(f"cannot create {self.workdir.parent}: {exc.strerror or exc}") from None
            try:
                # A bare mirror of the remote: we only read objects, worktrees come from checkout().
                repo = git.Repo.clone_from(self.url, self.workdir, bare=True, env=_NO_PROMPT,
                                           kill_after_timeout=self.timeout)
            except GitCommandError as exc:
                raise SourceError(f"cannot clone {self.shown}: {_stderr(exc)}") from None
        repo.git.update_environment(**_NO_PROMPT)
        self._repo = repo
        return repo

    def fetch(self) -> Revision:
        with self._lock:
            repo = self._open()
            refspec = f"+refs/heads/{self.branch}:refs/heads/{self.branch}"
            try:
                repo.git.fetch("origin", refspec, "--prune", kill_after_timeout=self.timeout)
            except GitCommandError as exc:
                raise SourceError(f"cannot fetch {self.branch} from {self.shown}: {_stderr(exc)}") from None
            try:
                return _revision(repo.commit(f"refs/heads/{self.branch}"))
            except (BadName, ValueError):
                raise SourceError(f"branch {self.branch!r} not found in {self.shown}") from None

    def _commit(self, sha: str):
        try:
            commit = self._open().commit(sha)
            commit.size  # objects load lazily: make a missing one fail here, not later
            return commit
        except (BadName, ValueError, GitCommandError):
            raise SourceError(f"commit {sha[:12]} not found in {self.shown}") from None

    def exists(self, sha: str) -> bool:
        try:
            self._commit(sha)
            return True
        except SourceError:
            return False

    def is_ancestor(self, old: str, new: str) -> bool:
        try:
            return self._open().is_ancestor(old, new)
        except GitCommandError:
            return False

    def revision(self, sha: str) -> Revision:
        return _revision(self._commit(sha))

    def changed_paths(self, old: str | None, new: str) -> list[str]:
        new_c = self._commit(new)
        if old is None:
            return sorted(b.path for b in new_c.tree.traverse() if b.type == "blob")
        old_c = self._commit(old)
        paths = set()
        for d in old_c.diff(new_c):
            paths.update(p for p in (d.a_path, d.b_path) if p)
        return sorted(paths)

    def read(self, sha: str, path: str) -> bytes | None:
        try:
            return (self._commit(sha).tree / path).data_stream.read()
        except KeyError:
            return None

    def checkout(self, sha: str) -> Path:
        """A read-only worktree of `sha` under <workdir>/../trees/<sha> (kept: a few per commit)."""
        target = self.workdir.parent / "trees" / sha
        if (target / ".autoupdate-complete").exists():
            return target
        with self._lock:
            repo = self._open()
            tmp = target.with_name(sha + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                repo.git.execute(["git", f"--work-tree={tmp}", "checkout", sha, "--", "."])
            except GitCommandError as exc:
                raise SourceError(f"cannot check out {sha[:12]}: {_stderr(exc)}") from None
            (tmp / ".autoupdate-complete").write_text(sha + "\n")
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            return target


def _stderr(exc: GitCommandError) -> str:
    text = without_password((exc.stderr or str(exc)).strip().replace("stderr: ", "").strip("'\" \n"))
    return text.splitlines()[-1] if text else "git failed"
