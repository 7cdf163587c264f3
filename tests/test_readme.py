"""The README's commands are the ones CI and users run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    test_command = next(line for line in ci_lines if line.startswith("python3 -m pytest"))
    assert f"\n{test_command}\n" in readme.split("## Tests", 1)[1]
