"""The example API's settings: one declaration each, from which everything else is derived."""

from __future__ import annotations

from pathlib import Path

import pytest

from example_api.cli import build_parser
from example_api.settings import (
    DatabaseOptions,
    Settings,
    SettingsError,
    declarations,
    docs_table,
    from_flags,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "example-api.md"
BASE = {"DATABASE_URL": "postgresql://app@db/blog"}  # several workers need PostgreSQL


def _value(settings: Settings, attribute: str) -> object:
    """The setting at ``attribute`` (``database.pool_size``: a nested one)."""
    value: object = settings
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


SAMPLES = {"EXAMPLE_API_REDIS_URL": "redis://cache:6379/0"}
"""Values other than the default for settings that only take values of one form."""


def _given(value: bool | int | str) -> str:
    """A value other than the default, as a variable holds it."""
    if isinstance(value, bool):
        return "0" if value else "1"
    if isinstance(value, int):
        return str(value + 7)
    return "postgresql://app@db/blog" if value.startswith("sqlite") else "0.0.0.0"


def test_the_docs_table_is_the_one_the_declarations_make() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert docs_table() in text, (
        "docs/example-api.md's settings table is out of date: replace it with the output "
        "of `python -m example_api.settings`"
    )


def test_every_setting_has_its_own_variable_and_attribute() -> None:
    specs = declarations()
    assert len({spec.env for spec in specs}) == len(specs)
    assert len({spec.attribute for spec in specs}) == len(specs)
    assert {spec.attribute for spec in declarations(DatabaseOptions)} == {
        spec.attribute.removeprefix("database.")
        for spec in specs
        if spec.attribute.startswith("database.")
    }


def test_every_variable_is_read_and_written_back() -> None:
    env = {spec.env: SAMPLES.get(spec.env) or _given(spec.default) for spec in declarations()}
    env["EXAMPLE_API_PORT"] = "9000"  # 8007 would do too; keep it a familiar port
    settings = Settings.from_env(env)
    for spec in declarations():
        assert _value(settings, spec.attribute) != spec.default, spec.env
    assert Settings.from_env(settings.to_env()) == settings
    assert set(settings.to_env()) == set(env)


def test_unset_and_empty_variables_give_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    empty = {spec.env: "" for spec in declarations() if not isinstance(spec.default, bool)}
    assert Settings.from_env(empty) == Settings()


def test_every_flag_overrides_its_variable() -> None:
    parser = build_parser()
    for spec in declarations():
        if isinstance(spec.default, bool):
            for flag, on in ((spec.flag, True), (spec.off_flag, False)):
                if flag is not None:
                    env = {**BASE, spec.env: "0" if on else "1"}
                    settings = from_flags(parser.parse_args(["serve", flag]), env)
                    assert _value(settings, spec.attribute) is on, flag
        elif spec.flag is not None:
            raw = SAMPLES.get(spec.env) or _given(spec.default)
            settings = from_flags(parser.parse_args(["serve", spec.flag, raw]), BASE)
            wanted = Settings.from_env({**BASE, spec.env: raw})
            assert _value(settings, spec.attribute) == _value(wanted, spec.attribute), spec.flag


def test_a_bad_flag_value_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--port", "http"])
    assert "--port must be an integer, got 'http'" in capsys.readouterr().err


def test_overrides_take_the_place_of_the_variables() -> None:
    settings = Settings.from_env({"EXAMPLE_API_PORT": "http"}, port=9000)
    assert settings.port == 9000
    with pytest.raises(SettingsError, match="EXAMPLE_API_PORT must be an integer"):
        Settings.from_env({"EXAMPLE_API_PORT": "http"})


def test_a_redis_url_of_another_scheme_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="EXAMPLE_API_REDIS_URL must start with redis://"):
        Settings.from_env({"EXAMPLE_API_REDIS_URL": "http://127.0.0.1:6379"})
    assert (
        Settings.from_env({"EXAMPLE_API_REDIS_URL": "redis://h:1/0"}).redis_url == "redis://h:1/0"
    )
