"""The README's two commands exist, are one line each, and CI runs command 2 exactly as written."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO


def readme_command(n: int) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- readme-command-{n} -->\n```bash\n(.*?)\n```", text, re.S)
    assert match, f"README.md has no command {n}"
    assert "\n" not in match.group(1), f"README command {n} must be one line"
    return match.group(1)


def test_ci_runs_the_readme_test_command():
    proc = subprocess.run(
        ["bash", ".ci/run", "--print"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == readme_command(2)
    assert "pytest" in readme_command(2)


def test_command_1_runs_the_quickstart():
    assert readme_command(1).endswith(".venv/bin/crisscross quickstart")
