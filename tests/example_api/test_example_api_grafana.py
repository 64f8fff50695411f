"""The Grafana dashboard in the docs asks only for what a real ``/metrics`` scrape has.

A real server (SQLite, production mode) answers a query that uses every loader
of the four-level query and records a view; then every metric and label the
dashboard's queries name must be in its ``/metrics``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from tests.example_api.e2e.server import FOUR_LEVELS, ROOT, Server, run_server

DASHBOARD = ROOT / "docs" / "grafana" / "gqlbatch-example-api.json"
_METRIC = re.compile(r"\b(example_api_[a-z_]+)\b(?:\{([^}]*)\})?")
_BY = re.compile(r"\bby \(([^)]*)\)")
_SAMPLE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? ", re.M)
_TYPE = re.compile(r"^# TYPE ([a-z_]+) (\w+)$", re.M)


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _queries() -> list[str]:
    return [target["expr"] for panel in _dashboard()["panels"] for target in panel["targets"]]


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Every series in a real ``/metrics``, with the label names its samples carry."""
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('grafana') / 'blog.db'}"
    args = ["--seed-if-empty", "5", "--production"]
    with run_server(database_url, tmp_path_factory.mktemp("logs"), args=args) as server:
        yield _series(_traffic(server))


def _traffic(server: Server) -> str:
    assert "errors" not in server.graphql(FOUR_LEVELS % 5)
    assert "errors" not in server.graphql('mutation { recordView(postId: "1") { accepted } }')
    response = server.get("/metrics")
    assert response.status_code == 200
    return response.text


def _series(text: str) -> dict[str, set[str]]:
    """Each series a scrape declares (``# TYPE``; a histogram's three), with its samples' labels.

    A counter nothing has counted yet (retries, failed keys) is declared with no sample.
    """
    series: dict[str, set[str]] = defaultdict(set)
    for family, kind in _TYPE.findall(text):
        for suffix in ("_bucket", "_sum", "_count") if kind == "histogram" else ("",):
            series[family + suffix] = set()
    for name, labels in _SAMPLE.findall(text):
        series[name] |= {pair.split("=", 1)[0] for pair in labels.split(",") if pair}
    return series


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = _dashboard()
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_the_dashboard_shows_what_the_docs_promise() -> None:
    queries = " ".join(_queries())
    for metric in (
        "example_api_loader_batch_size",  # batch sizes
        "example_api_loader_batch_wait_seconds",  # wait
        "example_api_loader_batch_retries_total",  # retries
        "example_api_loader_cache_hits_total",  # cache hits
        "example_api_sql_statements_per_request",  # statements per request
    ):
        assert metric in queries, metric


def test_every_metric_and_label_the_dashboard_names_is_in_a_real_scrape(
    scrape: dict[str, set[str]],
) -> None:
    for query in _queries():
        labels_here: set[str] = set()
        unsampled = False  # a series with no sample yet: its labels cannot be checked
        for metric, selector in _METRIC.findall(query):
            assert metric in scrape, f"{metric} is not in /metrics (query: {query})"
            selected = {m.split("!")[0].split("=")[0].strip() for m in selector.split(",") if m}
            missing = selected - scrape[metric] if scrape[metric] else set()
            assert not missing, f"{metric} has no label {missing} (query: {query})"
            labels_here |= scrape[metric]
            unsampled = unsampled or not scrape[metric]
        for group in [] if unsampled else _BY.findall(query):
            wanted = {label.strip() for label in group.split(",")}
            assert wanted <= labels_here, f"by ({group}) names a label no metric has: {query}"


def test_the_docs_page_links_the_dashboard() -> None:
    page = (ROOT / "docs" / "observability.md").read_text()
    assert f"grafana/{DASHBOARD.name}" in page
