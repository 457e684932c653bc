"""The README's commands and CI stay in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^TEST_COMMAND='(.+)'$", ci, flags=re.MULTILINE)
    assert match, ".ci/run must define TEST_COMMAND"
    readme = (ROOT / "README.md").read_text()
    assert match.group(1) in readme


def test_install_commands_pin_the_cpu_torch_build():
    readme = (ROOT / "README.md").read_text()
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+$", constraints, flags=re.MULTILINE)
    install_lines = [line for line in readme.splitlines() if "pip install" in line]
    assert install_lines
    assert all("-c constraints.txt" in line for line in install_lines)
