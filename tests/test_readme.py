"""README.md stays true: CI runs its test command, the other command trains, the API tour runs.

Scope: the text of README.md and .ci/run, and the Python API tour; running the shell
commands is CI's job.
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


def test_api_tour_runs_without_warnings(tmp_path, monkeypatch):
    import warnings

    tour = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[0]
    monkeypatch.chdir(tmp_path)  # the tour saves a model file in the working directory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(tour, "README.md (API tour)", "exec"), {})
    assert (tmp_path / "digits.npz").exists()


def test_quoted_results_exist():
    """Every result file or folder the README quotes is committed under bench/results/."""
    quoted = set(re.findall(r"bench/results/[\w./-]+", (ROOT / "README.md").read_text()))
    assert quoted, "the README quotes no benchmark results"
    missing = sorted(path for path in quoted if not (ROOT / path.rstrip(".")).exists())
    assert missing == []
