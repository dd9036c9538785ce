"""README.md's two set-up commands stay true: CI runs the test command, the other trains.

Scope: the text of README.md and .ci/run only; running the commands is CI's job.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    """The first two fenced bash blocks of README.md, one command each."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks[:2]]


def test_first_command_installs_and_trains():
    train, _ = readme_commands()
    assert "pip install ." in train
    assert train.endswith("fastsoftmax train")


def test_ci_runs_the_readme_test_command():
    _, test_command = readme_commands()
    assert "pytest" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert test_command in ci_lines
