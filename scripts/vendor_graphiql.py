"""Fetch the files Strawberry's GraphiQL page loads into ``example_api/static/graphiql/``.

Run it (``make vendor-graphiql``) after upgrading Strawberry; commit what it writes.
It needs ``npm`` and the npm registry; nothing else does.

For each package the page names (``<package>@<version>``, read from the page
itself, so the versions are Strawberry's):

1. ``npm view`` gives the registry's ``dist.integrity`` (SHA-512 of the tarball);
2. ``npm pack`` downloads the tarball, whose SHA-512 must equal it;
3. only the files the page loads are extracted, each checked against the page's
   own subresource-integrity hash, plus the package's licence file. A package
   whose tarball has none (``@graphiql/plugin-explorer``) gets the licence of
   the vendored package from the same repository, and the manifest says so;
4. ``manifest.json`` lists every package with its version, registry integrity,
   licence, and each file with its SHA-256.

The old directory is replaced only when every check has passed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from example_api.graphiql import ASSETS_DIR, Asset, page_assets

LICENCE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "license", "license.md")


def npm(*args: str) -> Any:
    """Run ``npm <args> --json`` and return its decoded output."""
    result = subprocess.run(
        ["npm", *args, "--json"], check=True, capture_output=True, text=True, timeout=300
    )
    return json.loads(result.stdout)


def sri(algorithm: str, data: bytes) -> str:
    """A subresource-integrity string (``sha384-<base64>``)."""
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def repository(package_json: dict[str, Any]) -> str:
    """The package's repository URL, normalised for comparison ("" if none)."""
    repo = package_json.get("repository") or ""
    url = repo.get("url", "") if isinstance(repo, dict) else str(repo)
    return url.split("://")[-1].removeprefix("www.").removesuffix(".git").rstrip("/")


def fetch(package: str, version: str, assets: list[Asset], into: Path) -> dict[str, Any]:
    """Download, check and extract one package; return its manifest entry."""
    spec = f"{package}@{version}"
    expected = npm("view", spec, "dist.integrity")
    with tempfile.TemporaryDirectory() as tmp:
        packed = npm("pack", spec, "--pack-destination", tmp)
        tarball = Path(tmp) / packed[0]["filename"]
        actual = sri("sha512", tarball.read_bytes())
        if actual != expected:
            raise SystemExit(f"{spec}: tarball is {actual}, the registry says {expected}")
        with tarfile.open(tarball) as archive:
            members = {m.name.removeprefix("package/"): m for m in archive.getmembers()}

            def read(name: str) -> bytes:
                member = archive.extractfile(members[name])
                assert member is not None, f"{spec}: {name} is not a file"
                return member.read()

            package_json = json.loads(read("package.json"))
            files: dict[str, bytes] = {}
            for asset in assets:
                if asset.file not in members:
                    raise SystemExit(f"{spec}: the page loads {asset.file}, the tarball lacks it")
                data = read(asset.file)
                if asset.integrity and sri(asset.integrity.split("-")[0], data) != asset.integrity:
                    raise SystemExit(f"{spec}/{asset.file}: not the file the page's hash names")
                files[asset.file] = data
            licence = next((name for name in LICENCE_NAMES if name in members), None)
            if licence is not None:
                files[licence] = read(licence)
    for name, data in files.items():
        target = into / spec / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return {
        "name": package,
        "version": version,
        "integrity": expected,
        "license": package_json.get("license"),
        "license_file": licence,
        "repository": repository(package_json),
        "files": [
            {"path": f"{spec}/{name}", "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sorted(files.items())
        ],
    }


def borrow_licences(packages: list[dict[str, Any]], into: Path) -> None:
    """Give a package without a licence file the one of a package from its repository."""
    for entry in packages:
        if entry["license_file"] is not None:
            continue
        donor = next(
            (
                other
                for other in packages
                if other["license_file"] and other["repository"] == entry["repository"]
            ),
            None,
        )
        if donor is None or donor["license"] != entry["license"]:
            raise SystemExit(f"{entry['name']}@{entry['version']}: no licence file to ship")
        spec = f"{entry['name']}@{entry['version']}"
        source = into / f"{donor['name']}@{donor['version']}" / donor["license_file"]
        target = into / spec / "LICENSE"
        shutil.copyfile(source, target)
        entry["license_file"] = "LICENSE"
        entry["license_file_from"] = (
            f"{donor['name']}@{donor['version']}: same repository ({entry['repository']}) "
            f"and licence ({entry['license']}); the tarball ships no licence file"
        )
        entry["files"].append(
            {"path": f"{spec}/LICENSE", "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
        )


def main() -> int:
    by_package: dict[tuple[str, str], list[Asset]] = defaultdict(list)
    for asset in page_assets():
        by_package[asset.package, asset.version].append(asset)
    ASSETS_DIR.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="graphiql-", dir=ASSETS_DIR.parent))
    staging.chmod(0o755)
    try:
        packages = [
            fetch(package, version, assets, staging)
            for (package, version), assets in sorted(by_package.items())
        ]
        borrow_licences(packages, staging)
        manifest = {
            "page": f"strawberry/static/graphiql.html of strawberry-graphql "
            f"{version('strawberry-graphql')}",
            "script": "scripts/vendor_graphiql.py",
            "packages": packages,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        shutil.rmtree(ASSETS_DIR, ignore_errors=True)
        staging.rename(ASSETS_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for entry in packages:
        print(f"{entry['name']}@{entry['version']}: {len(entry['files'])} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
