"""The docs' examples run as a reader copies them from the built site, and so does the README's.

The site is built once (``mkdocs build --strict``). On each page, every Python
block with a file name (``title="name.py"`` in the Markdown) is an example:
its text is taken from the rendered HTML, as the copy button takes it, saved
under that name in an empty directory, and run there with ``python -W error``
in asyncio debug mode. Blocks a page shows earlier are saved first, so an
example may import another only when the page names it and shows it. Blocks
without a file name are fragments (signatures, one-liners), not examples.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests._stderr import without_slow_steps

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
ALL_PAGES = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
PAGES = [stem for stem in ALL_PAGES if 'title="' in (ROOT / "docs" / f"{stem}.md").read_text()]


def _run(path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``path`` from its own directory, as ``python -W error <name>``."""
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1"}
    env.pop("PYTHONPATH", None)  # nothing but what a reader has: the installed packages
    return subprocess.run(
        [sys.executable, "-W", "error", path.name],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=path.parent,
        env=env,
    )


class _CodeBlocks(HTMLParser):
    """Collects ``(file name or None, code)`` of each highlighted Python block of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str | None, str]] = []
        self._depth = 0  # <div> nesting inside the current Python block; 0: outside one
        self._title: str | None = None
        self._python = False
        self._in_title = False
        self._code: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if tag == "div" and self._depth:
            self._depth += 1
        elif tag == "div" and "highlight" in classes:
            self._depth, self._title = 1, None
            self._python = "language-python" in classes
        elif self._depth and tag == "span" and "filename" in classes:
            self._in_title, self._title = True, ""
        elif self._depth and tag == "code":
            self._code = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._in_title = False
        elif tag == "code" and self._code is not None:
            if self._python:
                self.blocks.append((self._title, "".join(self._code)))
            self._code = None
        elif tag == "div" and self._depth:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title = (self._title or "") + data
        elif self._code is not None:
            self._code.append(data)


def python_blocks(html: str) -> list[tuple[str | None, str]]:
    """Every highlighted Python block of a rendered page, with its file name if it has one."""
    parser = _CodeBlocks()
    parser.feed(html)
    return parser.blocks


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built strictly."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    return site_dir


def _page(site: Path, stem: str) -> str:
    return (site / ("index.html" if stem == "index" else f"{stem}/index.html")).read_text()


def test_the_docs_site_builds_strictly(site: Path) -> None:
    api = (site / "api" / "index.html").read_text()
    assert "load_many" in api  # the reference is generated from the docstrings
    for page in site.rglob("*.html"):
        text = page.read_text()
        for mangled in ("--8&lt;--", "--8 &lt; --"):
            assert mangled not in text, f"{page}: a snippet was not included"
    assert "fetch_users" in (site / "index.html").read_text()


@pytest.mark.parametrize("page", PAGES)
def test_every_example_on_the_page_runs_as_copied(
    site: Path, page: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    examples = [(title, code) for title, code in python_blocks(_page(site, page)) if title]
    assert examples, f"docs/{page}.md names files but its page shows none"
    if any("needs Redis" in code.partition("\n")[0] for _, code in examples):
        request.getfixturevalue("redis_url")  # skips without Redis, unless it is required
    for title, code in examples:  # all saved first: the reader saves what the page shows
        (tmp_path / title).write_text(code)
    for title, _ in examples:
        result = _run(tmp_path / title)
        assert result.returncode == 0, f"{page}: {title}\n{result.stdout}{result.stderr}"
        assert without_slow_steps(result.stderr) == "", f"{page}: {title}"


def test_every_example_file_is_shown_under_its_name(site: Path) -> None:
    shown = {title: code for stem in ALL_PAGES for title, code in python_blocks(_page(site, stem))}
    for path in EXAMPLES:
        assert path.name in shown, f"no page shows {path.name} under its name"
        assert shown[path.name].strip() == path.read_text().strip(), path.name


def test_a_module_an_example_imports_is_shown_on_its_page(site: Path) -> None:
    # The defect this guards: sqlalchemy.md's examples imported sqlalchemy_models,
    # and the page never said to save the models block under that name.
    local = {path.stem for path in EXAMPLES}
    for stem in ALL_PAGES:
        blocks = python_blocks(_page(site, stem))
        titles = {title for title, _ in blocks if title}
        for title, code in blocks:
            for module in re.findall(r"^(?:from|import) (\w+)", code, re.M):
                if module in local:
                    assert f"{module}.py" in titles, f"{stem}: {title} imports {module}"


# -- the README ----------------------------------------------------------------------------


def _readme_python() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_example_is_the_quickstart_and_runs(tmp_path: Path) -> None:
    blocks = _readme_python()
    assert blocks, "README has no python example"
    assert blocks[0].strip() in (ROOT / "docs" / "examples" / "quickstart.py").read_text()
    script = tmp_path / "readme_example.py"
    script.write_text(blocks[0])
    result = _run(script)
    assert result.returncode == 0, result.stderr
    assert "ada grace ada None" in result.stdout


@pytest.fixture
def readme_quickstart(tmp_path: Path) -> Path:
    """The README's Strawberry + SQLAlchemy quickstart, saved as quickstart.py."""
    blocks = _readme_python()
    assert len(blocks) >= 2, "README lacks the Strawberry + SQLAlchemy quickstart"
    expected = (ROOT / "docs" / "examples" / "quickstart_sqlalchemy.py").read_text()
    assert blocks[1].strip() == expected.strip()
    script = tmp_path / "quickstart.py"
    script.write_text(blocks[1])
    return script


def test_readme_strawberry_quickstart_runs_and_prints_what_it_says(
    readme_quickstart: Path,
) -> None:
    result = _run(readme_quickstart)
    assert result.returncode == 0, result.stdout + result.stderr
    assert without_slow_steps(result.stderr) == ""
    readme = (ROOT / "README.md").read_text()
    output = re.search(r"quickstart\.py.*?Output:\n\n```text\n(.*?)```", readme, re.S)
    assert output, "README shows no output for the quickstart"
    assert result.stdout == output[1]


def test_readme_strawberry_quickstart_app_serves_graphql(readme_quickstart: Path) -> None:
    # What `uvicorn quickstart:app` serves, after `python quickstart.py` made the table.
    assert _run(readme_quickstart).returncode == 0
    probe = readme_quickstart.with_name("probe.py")
    probe.write_text(
        "import asyncio, json\n"
        "import httpx\n"
        "from quickstart import app, engine\n\n\n"
        "async def main() -> None:\n"
        "    transport = httpx.ASGITransport(app=app)\n"
        "    async with httpx.AsyncClient(transport=transport, base_url='http://q') as client:\n"
        "        response = await client.post('/graphql', json={'query': '{ name(id: 2) }'})\n"
        "    await engine.dispose()\n"
        "    print(json.dumps(response.json()['data']))\n\n\n"
        "asyncio.run(main())\n"
    )
    result = _run(probe)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == '{"name": "grace"}'
