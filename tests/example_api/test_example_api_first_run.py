"""What a new user meets first: the URL in the log, GraphiQL served offline, clear errors.

The real-browser view of GraphiQL is ``test_example_api_browser.py``; here the
same server is read over HTTP (in-process where the process does not matter).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from example_api.app import create_app
from example_api.graphiql import (
    ASSETS_DIR,
    ASSETS_PATH,
    GraphiQLAssetsMissing,
    graphiql_html,
    load_manifest,
    page_assets,
)
from example_api.settings import Settings
from tests.example_api.e2e.server import ROOT, Server, run_server

# -- the start-up log names the URL ---------------------------------------------------------


@pytest.fixture(scope="module", params=["debug", "production"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('first') / 'blog.db'}"
    with run_server(
        database_url, tmp_path_factory.mktemp("logs"), args=[f"--{request.param}"]
    ) as running:
        yield running


def test_the_start_up_log_names_the_url_to_open(server: Server) -> None:
    log = server.logs()
    if "(debug)" in log:
        assert f"GraphiQL: open {server.url}/graphql in a browser" in log
    else:
        assert f"GraphQL endpoint: POST {server.url}/graphql" in log
        assert "GraphiQL" not in log.replace("no GraphiQL", "")


def test_the_root_redirects_to_graphiql_in_debug_mode_only(server: Server) -> None:
    response = server.get("/", follow_redirects=False)
    if "(debug)" in server.logs():
        assert response.status_code == 307
        assert response.headers["location"] == "/graphql"
        page = server.get("/", headers={"accept": "text/html"}, follow_redirects=True)
        assert "graphiql" in page.text.lower()
    else:
        assert response.status_code == 404


def test_serve_help_says_what_debug_turns_on() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "example_api", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0, result.stderr
    options = result.stdout.split("\noptions:", 1)[1]
    debug = " ".join(options.split("\n  --debug", 1)[1].split("\n  --production")[0].split())
    for promise in ("GraphiQL", "redirects", "introspection", "error messages", "statistics"):
        assert promise in debug, promise


# -- GraphiQL's files ------------------------------------------------------------------------


def test_every_file_the_graphiql_page_loads_is_vendored_with_the_pages_hash() -> None:
    assets = page_assets()
    assert len(assets) == 7  # React, ReactDOM, js-cookie, GraphiQL (2), explorer (2)
    assert {a.package for a in assets} >= {"graphiql", "react", "react-dom", "js-cookie"}
    for asset in assets:
        data = (ASSETS_DIR / asset.path).read_bytes()
        assert asset.integrity is not None, asset.path
        algorithm, _, expected = asset.integrity.partition("-")
        digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
        assert digest == expected, f"{asset.path} is not the file Strawberry's page names"


def test_the_manifest_lists_each_package_with_its_licence_and_file_hashes() -> None:
    manifest = load_manifest()
    listed = {f"{p['name']}@{p['version']}" for p in manifest["packages"]}
    assert listed == {f"{a.package}@{a.version}" for a in page_assets()}
    on_disk = {
        str(path.relative_to(ASSETS_DIR)) for path in ASSETS_DIR.rglob("*") if path.is_file()
    }
    in_manifest = {"manifest.json"}
    for package in manifest["packages"]:
        assert package["integrity"].startswith("sha512-"), package["name"]
        assert package["license"] == "MIT", package["name"]
        spec = f"{package['name']}@{package['version']}"
        assert (ASSETS_DIR / spec / package["license_file"]).is_file(), spec
        for entry in package["files"]:
            data = (ASSETS_DIR / entry["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
            in_manifest.add(entry["path"])
    assert on_disk == in_manifest, "files and manifest differ: run make vendor-graphiql"


def test_the_vendored_files_are_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["example_api"]
    package_dir = ROOT / "example_api"
    for path in ASSETS_DIR.rglob("*"):
        if path.is_file():
            relative = str(path.relative_to(package_dir))
            assert any(fnmatch(relative, pattern) for pattern in patterns), relative


def test_a_page_needing_a_file_that_is_not_vendored_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("example_api.graphiql.ASSETS_DIR", tmp_path)
    with pytest.raises(GraphiQLAssetsMissing, match=r"graphiql@3\.8\.3/graphiql\.min\.js"):
        graphiql_html()
    assert "https://unpkg.com/graphiql@" in graphiql_html("https://unpkg.com")


@pytest.fixture
async def client(sqlite_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    app: Starlette = create_app(Settings(database_url=sqlite_url, debug=True, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            yield c


async def test_graphiql_loads_its_files_from_the_server_itself(client: httpx.AsyncClient) -> None:
    page = (await client.get("/graphql", headers={"accept": "text/html"})).text
    assert "unpkg.com" not in page
    for asset in page_assets():
        url = f"{ASSETS_PATH}/{asset.path}"
        assert f'"{url}"' in page
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.content == (ASSETS_DIR / asset.path).read_bytes()
        kind = "text/css" if url.endswith(".css") else "javascript"
        assert kind in response.headers["content-type"], url


@pytest.mark.parametrize("client", [{"graphiql_cdn": "https://cdn.example/npm/"}], indirect=True)
async def test_graphiql_loads_its_files_from_the_cdn_setting(client: httpx.AsyncClient) -> None:
    page = (await client.get("/graphql", headers={"accept": "text/html"})).text
    assert '"https://cdn.example/npm/react@18.2.0/umd/react.production.min.js"' in page
    assert ASSETS_PATH not in page
    assert (await client.get(f"{ASSETS_PATH}/manifest.json")).status_code == 404


# -- messages ----------------------------------------------------------------------------------


async def _errors(client: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    body = (await client.post("/graphql", json={"query": query})).json()
    errors: list[dict[str, Any]] = body["errors"]
    return errors


async def test_the_token_limit_says_the_limit_and_has_a_code(client: httpx.AsyncClient) -> None:
    query = "{ " + "users(limit: 1) { id } " * 700 + "}"
    [error] = await _errors(client, query)
    assert "more than 2000 tokens, the most this server accepts" in error["message"]
    assert error["extensions"] == {"code": "TOO_MANY_TOKENS", "maxTokens": 2000}


async def test_syntax_and_validation_errors_carry_codes(client: httpx.AsyncClient) -> None:
    [syntax] = await _errors(client, "{ users(limit: 1) { id }")
    assert syntax["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    [unknown] = await _errors(client, "{ nosuch }")
    assert unknown["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert json.dumps(unknown).count("code") == 1
