"""GraphiQL as a person sees it: Debian's Chromium, driven by Playwright, without internet.

The example runs in debug mode on loopback; the browser opens ``/graphql``,
types the four-level query, runs it, and reads the result pane. Every request
to anything but loopback is refused, so the page must render from the files
the example ships. The screenshots go to the test's tmp directory, and also
to the directory ``GQLBATCH_SCREENSHOT_DIR`` when set (``make screenshots``
writes ``docs/img/graphiql.png`` and ``graphiql-stats.png`` that way).

Playwright never downloads a browser here: it drives ``/usr/bin/chromium``
(``apt-get install chromium``). Without it the test is skipped, unless
``GQLBATCH_REQUIRE_BROWSER`` is set (``.ci/run`` sets it): then it fails.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.example_api.e2e.server import FOUR_LEVELS, Server, run_server

if TYPE_CHECKING:  # imported in the tests: a machine without Playwright skips them
    from playwright.async_api import Page, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # root in CI, and no user namespaces in containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
)
LOOPBACK = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
USERS = 10  # the query and the seed of docs/example-api.md, whose screenshots this takes
WAIT_MS = 30_000


def _need_browser() -> None:
    """Skip without Chromium or Playwright; fail instead when CI requires the browser."""
    problem = None
    if not CHROMIUM.is_file():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install -e '.[dev]')"
    if problem is None:
        return
    if os.environ.get("GQLBATCH_REQUIRE_BROWSER"):
        pytest.fail(f"GQLBATCH_REQUIRE_BROWSER is set but {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _need_browser()
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('browser') / 'blog.db'}"
    args = ["--debug", "--seed-if-empty", "50"]
    with run_server(database_url, tmp_path_factory.mktemp("logs"), args=args) as running:
        yield running


@dataclass
class Tab:
    """A Chromium page that can reach loopback only, with what it refused and what it threw."""

    page: Page
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
async def tab(server: Server) -> AsyncIterator[Tab]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), timeout=WAIT_MS
        )
        try:
            context = await browser.new_context(viewport={"width": 1500, "height": 950})
            opened = Tab(await context.new_page())

            async def loopback_only(route: Route) -> None:
                if urlsplit(route.request.url).hostname in LOOPBACK:
                    await route.continue_()
                else:
                    opened.refused.append(route.request.url)
                    await route.abort("internetdisconnected")

            await context.route("**/*", loopback_only)
            opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
            opened.page.set_default_timeout(WAIT_MS)
            yield opened
        finally:
            await browser.close()


async def _editor_text(page: Page, pane: str) -> str:
    """The whole text of a GraphiQL CodeMirror pane (the DOM shows only visible lines)."""
    text: str = await page.eval_on_selector(f"{pane} .CodeMirror", "e => e.CodeMirror.getValue()")
    return text


async def test_graphiql_runs_the_four_level_query_offline(
    server: Server, tab: Tab, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    page = tab.page
    query = " ".join((FOUR_LEVELS % USERS).split())
    await page.goto(f"{server.url}/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await editor.wait_for()
    await editor.click()
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(query)
    assert await _editor_text(page, ".graphiql-query-editor") == query
    await page.keyboard.press("Escape")  # the completion list typing opened
    await page.keyboard.press("Shift+Control+P")  # prettify, as a person would to read it
    assert (await _editor_text(page, ".graphiql-query-editor")).count("\n") > 5

    await page.keyboard.press("Escape")  # and the one prettifying opened
    await expect(page.locator(".CodeMirror-hints")).to_have_count(0)
    await page.locator(".graphiql-execute-button").click()
    await page.wait_for_function(  # the whole answer: the pane renders only what is in view
        """() => document.querySelector(".graphiql-response .CodeMirror")
                   ?.CodeMirror.getValue().includes('"gqlbatch"')"""
    )
    result = json.loads(await _editor_text(page, ".graphiql-response"))

    users = result["data"]["users"]
    assert len(users) == USERS
    assert all(user["name"] and isinstance(user["posts"], list) for user in users)
    stats = result["extensions"]["gqlbatch"]
    assert stats["sql_statements"] == 5, stats  # users, then posts, comments, tags, authors
    assert stats["loaders"], "extensions.gqlbatch lists no loader"
    for name, loader in stats["loaders"].items():
        assert loader["batches"] == 1, (name, loader)
    assert tab.refused == [], "the page tried to leave loopback"
    assert tab.errors == [], "the page threw"

    await page.screenshot(path=str(tmp_path / "graphiql.png"))
    await page.eval_on_selector(  # the end of the answer: extensions.gqlbatch
        ".graphiql-response .CodeMirror",
        "e => e.CodeMirror.scrollIntoView({line: e.CodeMirror.lastLine(), ch: 0})",
    )
    await page.wait_for_timeout(500)  # CodeMirror colours newly shown lines when idle
    await page.screenshot(path=str(tmp_path / "graphiql-stats.png"))
    target = os.environ.get("GQLBATCH_SCREENSHOT_DIR")
    for name in ("graphiql.png", "graphiql-stats.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        if target:
            shutil.copyfile(tmp_path / name, Path(target) / name)
