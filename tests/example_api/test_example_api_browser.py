"""GraphiQL as a person sees it: Debian's Chromium, driven by Playwright, without internet.

The example runs in debug mode on loopback; the browser opens ``/graphql``,
types the four-level query, runs it, and reads the result pane. Every request
to anything but loopback is refused, so the page must render from the files
the example ships. The screenshot goes to the test's tmp directory, and also
to ``GQLBATCH_SCREENSHOT`` when set (``make screenshot`` writes
``docs/img/graphiql.png`` that way).

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
USERS = 3
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
    args = ["--debug", "--seed-if-empty", "10", "--seed", "3"]
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
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
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
    page = tab.page
    query = " ".join((FOUR_LEVELS % USERS).split())
    await page.goto(f"{server.url}/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    await editor.wait_for()
    await editor.click()
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(query)
    assert await _editor_text(page, ".graphiql-query-editor") == query

    await page.locator(".graphiql-execute-button").click()
    await page.locator(".graphiql-response .CodeMirror-code", has_text="gqlbatch").wait_for()
    result = json.loads(await _editor_text(page, ".graphiql-response"))

    users = result["data"]["users"]
    assert len(users) == USERS
    assert all(user["name"] and isinstance(user["posts"], list) for user in users)
    stats = result["extensions"]["gqlbatch"]
    assert stats, "extensions.gqlbatch lists no loader"
    for name, loader in stats.items():
        assert loader["keys_requested"] >= 1, (name, loader)
    assert tab.refused == [], "the page tried to leave loopback"
    assert tab.errors == [], "the page threw"

    screenshot = tmp_path / "graphiql.png"
    await page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000
    target = os.environ.get("GQLBATCH_SCREENSHOT")
    if target:
        shutil.copyfile(screenshot, target)
