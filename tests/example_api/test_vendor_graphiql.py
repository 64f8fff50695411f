"""``scripts/vendor_graphiql.py`` keeps only files whose hashes check out (npm faked, offline)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import shutil
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from example_api.graphiql import Asset
from tests.example_api.e2e.server import ROOT

SCRIPT = ROOT / "scripts" / "vendor_graphiql.py"
CODE = b"window.Thing = 1;\n"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vendor_graphiql", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sri(algorithm: str, data: bytes) -> str:
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def _tarball(path: Path, files: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path.read_bytes()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake ``npm``: ``view`` answers ``registry["integrity"]``, ``pack`` copies the tarball."""
    script = _load_script()
    package_json = json.dumps({"license": "MIT", "repository": "github:x/thing"}).encode()
    tarball = tmp_path / "thing-1.0.0.tgz"
    data = _tarball(tarball, {"package.json": package_json, "dist/t.js": CODE, "LICENSE": b"MIT"})
    state: dict[str, Any] = {"script": script, "integrity": _sri("sha512", data)}

    def npm(*args: str) -> Any:
        if args[0] == "view":
            return state["integrity"]
        shutil.copy(tarball, args[-1])
        return [{"filename": tarball.name}]

    monkeypatch.setattr(script, "npm", npm)
    return state


def test_a_package_whose_hashes_match_is_extracted_with_its_licence(
    registry: dict[str, Any], tmp_path: Path
) -> None:
    asset = Asset("thing", "1.0.0", "dist/t.js", _sri("sha384", CODE))
    entry = registry["script"].fetch("thing", "1.0.0", [asset], tmp_path / "out")
    assert (tmp_path / "out" / "thing@1.0.0" / "dist" / "t.js").read_bytes() == CODE
    assert entry["license_file"] == "LICENSE"
    assert {f["path"] for f in entry["files"]} == {"thing@1.0.0/dist/t.js", "thing@1.0.0/LICENSE"}


def test_a_tarball_that_is_not_the_registrys_is_refused(
    registry: dict[str, Any], tmp_path: Path
) -> None:
    registry["integrity"] = _sri("sha512", b"another tarball")
    asset = Asset("thing", "1.0.0", "dist/t.js", None)
    with pytest.raises(SystemExit, match="the registry says"):
        registry["script"].fetch("thing", "1.0.0", [asset], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_the_one_the_page_names_is_refused(
    registry: dict[str, Any], tmp_path: Path
) -> None:
    asset = Asset("thing", "1.0.0", "dist/t.js", _sri("sha384", b"what the page expects"))
    with pytest.raises(SystemExit, match="not the file the page's hash names"):
        registry["script"].fetch("thing", "1.0.0", [asset], tmp_path / "out")
    assert not (tmp_path / "out").exists()
