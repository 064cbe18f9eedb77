"""The installed package: imports under clipcrawl.*, console script, python -m clipcrawl."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("clipcrawl.io", "clipcrawl.transforms", "clipcrawl.pipelines", "clipcrawl.runners")


def _clean_env() -> dict[str, str]:
    """Run from a directory outside the repo, so only the installed package can be found."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_layers_import_and_the_standard_io_is_not_shadowed(tmp_path) -> None:
    code = (
        "import io, clipcrawl, " + ", ".join(LAYERS) + "\n"
        "assert io.BytesIO is not None and io.__name__ == 'io'\n"
        "import clipcrawl.pipelines.build_dataset, clipcrawl.io.coordinator, clipcrawl.transforms.extract\n"
        "print(clipcrawl.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == importlib.import_module("clipcrawl").__version__


def test_importing_the_cli_does_not_import_torch(tmp_path) -> None:
    code = "import sys, clipcrawl.pipelines.cli, clipcrawl.pipelines.build_dataset; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("command", [["clipcrawl"], [sys.executable, "-m", "clipcrawl"]], ids=["script", "module"])
def test_entry_points_list_the_subcommands(command, tmp_path) -> None:
    if command[0] == "clipcrawl":
        script = shutil.which("clipcrawl") or os.path.join(os.path.dirname(sys.executable), "clipcrawl")
        assert os.path.exists(script), "console script not installed"
        command = [script]
    result = subprocess.run([*command, "--help"], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for subcommand in ("run", "demo", "status"):
        assert subcommand in result.stdout


def test_tiny_clip_assets_are_package_data() -> None:
    from importlib import resources

    assets = resources.files("clipcrawl.transforms") / "assets"
    names = {entry.name for entry in assets.iterdir()}
    assert {"clipcrawl-tiny.json", "clipcrawl-tiny.pt"} <= names


def test_non_editable_install_builds_the_same_package(tmp_path) -> None:
    """``pip install .`` (a real wheel, no editable finder) maps the folders the same way."""
    target, source = tmp_path / "site", tmp_path / "source"
    # Build from a copy: an in-tree build would leave build/ in the working tree.
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "clipcrawl-demo"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    installed = target / "clipcrawl"
    for relative in ("__init__.py", "__main__.py", "io/coordinator.py", "transforms/extract.py", "transforms/pairs.py",
                     "transforms/assets/clipcrawl-tiny.pt", "pipelines/cli.py", "runners/direct.py"):
        assert (installed / relative).exists(), relative
    assert not (installed / "pipelines" / "_root").exists()
    code = "import clipcrawl.io.coordinator as c, clipcrawl; print(c.__file__)"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**_clean_env(), "PYTHONPATH": str(target)},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(target))
