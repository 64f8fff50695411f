"""GraphiQL served by the example itself, so that debug mode works without internet.

Strawberry's GraphiQL page loads React, ReactDOM, js-cookie, GraphiQL and its
explorer plugin (seven files) from unpkg; offline it stays on "Loading...".
The example ships the very same files, in the versions the page names, as
package data under ``example_api/static/graphiql/<package>@<version>/``, each
package with its licence, listed in ``manifest.json`` with the npm registry's
integrity hash of its tarball and each file's SHA-256. ``make vendor-graphiql``
(``scripts/vendor_graphiql.py``) fetches them again from the npm registry.

:func:`graphiql_html` is Strawberry's page with each CDN address rewritten to
:data:`ASSETS_PATH` (or to another CDN laid out like unpkg,
``<base>/<package>@<version>/<file>``: the ``EXAMPLE_API_GRAPHIQL_CDN``
setting). The page's subresource-integrity hashes stay, so the browser checks
the served files as it checks the CDN's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from starlette.staticfiles import StaticFiles
from strawberry.http.ides import get_graphql_ide_html

from gqlbatch.strawberry import GraphQL, LoaderRegistry

__all__ = [
    "ASSETS_DIR",
    "ASSETS_PATH",
    "CDN",
    "Asset",
    "GraphQLWithPage",
    "GraphiQLAssetsMissing",
    "assets_app",
    "graphiql_html",
    "load_manifest",
    "page_assets",
]

CDN = "https://unpkg.com"
"""The CDN Strawberry's page loads its files from."""

ASSETS_DIR = Path(__file__).with_name("static") / "graphiql"
"""Where the vendored files live (package data)."""

ASSETS_PATH = "/static/graphiql"
"""The URL path the server mounts :data:`ASSETS_DIR` at."""

_ASSET = re.compile(
    re.escape(CDN) + r"/(?P<package>(?:@[\w.-]+/)?[\w.-]+)@(?P<version>[\w.-]+)/(?P<file>[^\"'\s]+)"
)
_INTEGRITY = re.compile(r'\s+integrity="(?P<integrity>[^"]+)"')


class GraphiQLAssetsMissing(RuntimeError):
    """The page needs a file that is not vendored (Strawberry was upgraded, say)."""


@dataclass(frozen=True, slots=True)
class Asset:
    """One file the GraphiQL page loads: ``<package>@<version>/<file>``."""

    package: str
    version: str
    file: str
    integrity: str | None
    """The page's subresource-integrity hash (``sha384-...``), if it gives one."""

    @property
    def path(self) -> str:
        """Where the file is under the CDN and under :data:`ASSETS_DIR`."""
        return f"{self.package}@{self.version}/{self.file}"


def page_assets(html: str | None = None) -> tuple[Asset, ...]:
    """Every CDN file ``html`` (default: Strawberry's GraphiQL page) loads, in page order."""
    html = get_graphql_ide_html("graphiql") if html is None else html
    assets = []
    for match in _ASSET.finditer(html):
        after = html[match.end() + 1 :]  # past the closing quote
        integrity = _INTEGRITY.match(after)
        assets.append(
            Asset(
                match["package"],
                match["version"],
                match["file"],
                integrity["integrity"] if integrity else None,
            )
        )
    return tuple(assets)


def load_manifest() -> dict[str, Any]:
    """The vendored packages: name, version, registry integrity, licence, files and hashes."""
    manifest: dict[str, Any] = json.loads((ASSETS_DIR / "manifest.json").read_text("utf-8"))
    return manifest


def graphiql_html(cdn: str = "") -> str:
    """Strawberry's GraphiQL page loading its files from this server, or from ``cdn``.

    ``cdn`` is a base URL laid out like unpkg (``https://unpkg.com``,
    ``https://cdn.jsdelivr.net/npm``); empty: :data:`ASSETS_PATH` on this
    server, and every file the page loads must be vendored.
    """
    html = get_graphql_ide_html("graphiql")
    if not cdn:
        missing = [a.path for a in page_assets(html) if not (ASSETS_DIR / a.path).is_file()]
        if missing:
            raise GraphiQLAssetsMissing(
                f"GraphiQL needs {', '.join(missing)}, which {ASSETS_DIR} lacks: run "
                "`make vendor-graphiql`, or set EXAMPLE_API_GRAPHIQL_CDN to load them from a CDN"
            )
    return html.replace(f"{CDN}/", f"{cdn.rstrip('/') or ASSETS_PATH}/")


def assets_app() -> StaticFiles:
    """The ASGI app that serves :data:`ASSETS_DIR` (mount it at :data:`ASSETS_PATH`)."""
    return StaticFiles(directory=ASSETS_DIR)


R = TypeVar("R", bound=LoaderRegistry)


class GraphQLWithPage(GraphQL[R]):
    """gqlbatch's ASGI GraphQL app, showing ``graphiql_page`` to browsers (None: no GraphiQL)."""

    def __init__(self, *args: Any, graphiql_page: str | None, **options: Any) -> None:
        super().__init__(*args, graphql_ide="graphiql" if graphiql_page else None, **options)
        self._graphiql_page = graphiql_page or ""

    @property
    def graphql_ide_html(self) -> str:
        """The page a browser gets from ``GET /graphql`` (Strawberry's, rewritten)."""
        return self._graphiql_page
