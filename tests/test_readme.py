"""The README's two set-up commands stay true: CI runs the README's test command verbatim."""

from __future__ import annotations

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parent.parent


def bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_install_demo_and_test_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = bash_blocks(readme)
    demo_command, test_command = blocks[0], blocks[1]
    assert demo_command == "pip install -e . && clipcrawl demo"
    assert "pytest" in test_command and "\n" not in test_command
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert f"python -m {test_command}" in ci_lines or test_command in ci_lines


def test_top_level_layout_is_the_designed_one() -> None:
    visible = {p.name for p in REPO.iterdir() if not p.name.startswith(".") and not p.name.endswith(".egg-info")}
    visible -= {"build", "dist", "clipcrawl-demo", "__pycache__"}
    assert visible == {"pipelines", "transforms", "io", "runners", "tests", "bench", "setup.py", "README.md"} or visible == {
        "pipelines", "transforms", "io", "runners", "tests", "setup.py", "README.md"
    }
