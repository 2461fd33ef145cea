"""What a result records about the code that made it: the commit, and whether the package's
source differed from it (a real git repository in a temporary folder)."""

import shutil
import subprocess

import pytest

from breastcad.runinfo import git_commit, uncommitted_changes

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def test_a_checkout_records_its_commit_and_changes_to_the_package_only(tmp_path):
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("readme\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    head = git(tmp_path, "rev-parse", "HEAD").strip()
    assert git_commit(package) == head and uncommitted_changes(package) is False
    (tmp_path / "README.md").write_text("changed\n")  # outside the package: not its code
    assert uncommitted_changes(package) is False
    (package / "__init__.py").write_text("x = 2\n")
    assert uncommitted_changes(package) is True
    git(tmp_path, "checkout", "-q", "--", ".")
    (package / "new_module.py").write_text("y = 1\n")  # a module not committed yet
    assert uncommitted_changes(package) is True


def test_an_installed_copy_is_no_checkout_even_inside_some_other_repository(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "README.md").write_text("a project\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "project")
    installed = tmp_path / ".venv" / "site-packages" / "pkg"  # a venv inside a project
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("x = 1\n")
    assert git_commit(installed) is None and uncommitted_changes(installed) is None
    outside = tmp_path.parent / f"{tmp_path.name}-plain" / "pkg"
    outside.mkdir(parents=True)
    (outside / "__init__.py").write_text("x = 1\n")
    assert git_commit(outside) is None and uncommitted_changes(outside) is None


def test_private_folders_and_files_are_this_accounts_alone(tmp_path):
    """Folders it makes are 0700 (a folder that was there keeps its mode), files 0600."""
    from breastcad.runinfo import private_folder, write_private

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    made = private_folder(shared / "a" / "b")
    assert [(p.stat().st_mode & 0o777) for p in (shared, shared / "a", made)] == [
        0o755,
        0o700,
        0o700,
    ]
    write_private(made / "f", b"x")
    assert (made / "f").stat().st_mode & 0o777 == 0o600 and (made / "f").read_bytes() == b"x"
