"""The docs' runnable examples run, and the README's example is one of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._stderr import without_slow_steps

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))


def _run(path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1"}
    return subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_cleanly(path: Path, request: pytest.FixtureRequest) -> None:
    if "needs Redis" in path.read_text().partition("\n")[0]:
        request.getfixturevalue("redis_url")  # skips without Redis, unless it is required
    result = _run(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert without_slow_steps(result.stderr) == ""


def test_readme_example_is_the_quickstart_and_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no python example"
    quickstart = (ROOT / "docs" / "examples" / "quickstart.py").read_text()
    assert blocks[0].strip() in quickstart
    script = tmp_path / "readme_example.py"
    script.write_text(blocks[0])
    result = _run(script)
    assert result.returncode == 0, result.stderr
    assert "ada grace ada None" in result.stdout


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    api = (tmp_path / "api" / "index.html").read_text()
    assert "load_many" in api  # the reference is generated from the docstrings
    for page in tmp_path.rglob("*.html"):
        text = page.read_text()
        for mangled in ("--8&lt;--", "--8 &lt; --"):
            assert mangled not in text, f"{page}: a snippet was not included"
    assert "fetch_users" in (tmp_path / "index.html").read_text()
