"""The option tables: each agrees with the dataclass it fills and with the README, whole numbers are whole, and
unknown keywords are refused.

Every test passes an ``environ`` dict: the process environment is never read or changed.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from datetime import timedelta
from pathlib import Path

import pytest

from otel_matomo import _reference
from otel_matomo._arguments import MatomoOptions
from otel_matomo._options import ConfigurationError
from otel_matomo._settings import SETTINGS_OPTIONS, SWITCHES, Settings, read_flag
from otel_matomo.gateway._config import GATEWAY_OPTIONS, GatewayConfig

PREFIX = "OTEL_EXPORTER_MATOMO_"
BASE = {
    PREFIX + "ENDPOINT": "https://matomo.example.com",
    PREFIX + "SITE_ID": "1",
    PREFIX + "VISITOR_ID_SECRET": "options-visitor-secret-of-some-length",
}
WHOLE_NUMBER_OPTIONS = ["queue_size", "batch_size", "buffer_max_hits", "buffer_max_bytes", "site_id"]


def _defaults(cls: type) -> dict[str, object]:
    """Each dataclass field's default (``REQUIRED`` for a field without one)."""
    found: dict[str, object] = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            found[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            found[item.name] = item.default_factory()
        else:
            found[item.name] = "REQUIRED"
    return found


# --- the tables agree with what they fill -----------------------------------------------------------------------


def test_the_settings_table_and_the_dataclass_have_the_same_options_and_defaults() -> None:
    from_table = {
        option.field_name: "REQUIRED" if option.required else option.default for option in SETTINGS_OPTIONS.options
    }

    assert from_table == _defaults(Settings)
    assert len(SETTINGS_OPTIONS.options) == len(from_table)  # no field filled by two options


def test_a_dataclass_that_disagrees_with_its_table_fails_at_import() -> None:
    class Missing:
        __annotations__ = {"endpoint": "str | None", "site_id": "int"}

    with pytest.raises(TypeError, match=r"Missing fields and Settings\.from_env options differ: \['anonymize_ip'"):
        SETTINGS_OPTIONS.fill(Missing)

    class Extra:
        __annotations__ = {option.field_name: "object" for option in GATEWAY_OPTIONS.options} | {"colour": "str"}

    with pytest.raises(TypeError, match=r"\['colour'\]"):
        GATEWAY_OPTIONS.fill(Extra)


def test_every_option_is_a_keyword_of_from_env_and_its_variable_is_its_name_in_capitals() -> None:
    keywords = {option.name for option in SETTINGS_OPTIONS.options if option.keyword}

    assert set(typing.get_type_hints(MatomoOptions)) == keywords
    assert [option.suffix for option in SETTINGS_OPTIONS.options] == [
        option.name.upper() for option in SETTINGS_OPTIONS.options
    ]
    assert all(option.help for option in (*SETTINGS_OPTIONS.options, *SWITCHES.options))


def test_the_gateway_table_and_its_config_agree() -> None:
    stored = {option.field_name for option in GATEWAY_OPTIONS.options}
    defaults = {option.field_name: option.default for option in GATEWAY_OPTIONS.options if option.name != "token_file"}
    parameters = set(inspect.signature(GatewayConfig.from_env).parameters) - {"cls", "environ"}

    assert stored == set(_defaults(GatewayConfig))
    assert defaults == _defaults(GatewayConfig)
    assert parameters == {option.name for option in GATEWAY_OPTIONS.options if option.keyword}


def test_an_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match=r"Settings\.from_env\(\) got an unexpected keyword argument 'batchsize'"):
        Settings.from_env(BASE, batchsize=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'capture_headers'"):
        SETTINGS_OPTIONS.read({"capture_headers": True}, {})
    with pytest.raises(TypeError, match="'token'"):  # the gateway token is never a keyword (nor a flag)
        GATEWAY_OPTIONS.read({"token": "x" * 20}, {})


def test_a_field_named_apart_from_its_keyword_is_filled() -> None:
    assert SETTINGS_OPTIONS["visitor_id"].field_name == "daily_visitor_id"
    assert Settings.from_env(BASE, visitor_id="daily").daily_visitor_id is True


# --- whole numbers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WHOLE_NUMBER_OPTIONS)
@pytest.mark.parametrize("raw", ["0.5", "0", "-1", "1.0", "10.0", "1e3", "abc", "1_000", "\u00b2"])
def test_a_whole_number_variable_is_digits_only(name: str, raw: str) -> None:
    variable = PREFIX + name.upper()

    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({**BASE, variable: raw})

    message = str(raised.value)
    assert message.startswith(f"{name} ({variable}) is {raw!r}: expected a positive whole number")


@pytest.mark.parametrize("name", WHOLE_NUMBER_OPTIONS)
@pytest.mark.parametrize("value", [0.5, 0, -1, 1.0, "abc", "0.5", True, 1e3])
def test_a_whole_number_argument_is_an_int_or_digits(name: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(BASE, **{name: value})  # type: ignore[misc]

    assert str(raised.value).startswith(
        f"Settings.from_env: {name} ({PREFIX}{name.upper()}) is {value!r}: expected a positive whole"
    )


@pytest.mark.parametrize("name", WHOLE_NUMBER_OPTIONS)
def test_whole_numbers_are_read_from_digits_and_ints(name: str) -> None:
    variable = PREFIX + name.upper()

    assert getattr(Settings.from_env({**BASE, variable: " 12 "}), name) == 12
    assert getattr(Settings.from_env(BASE, **{name: 7}), name) == 7  # type: ignore[misc]
    assert getattr(Settings.from_env(BASE, **{name: "9"}), name) == 9  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("PORT", "4318.0"), ("PORT", "0"), ("QUEUE_SIZE", "0.5"), ("QUEUE_SIZE", "1e3"), ("MAX_BODY_SIZE", "-1")],
)
def test_gateway_whole_numbers_are_digits_only(variable: str, raw: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"\(OTEL_MATOMO_GATEWAY_{variable}\) is '{raw}': expected"):
        GatewayConfig.from_env({f"OTEL_MATOMO_GATEWAY_{variable}": raw})


DURATIONS = [
    ("timeout", "milliseconds", "timedelta(seconds=10)"),
    ("schedule_delay", "milliseconds", "timedelta(seconds=1)"),
    ("buffer_max_age", "seconds", "timedelta(days=1)"),
]


@pytest.mark.parametrize(("name", "unit", "example"), DURATIONS)
@pytest.mark.parametrize("value", [5000, 2.5, 0])
def test_a_bare_number_for_a_duration_is_refused_naming_both_units(
    name: str, unit: str, example: str, value: float
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(BASE, **{name: value})  # type: ignore[misc]

    assert str(raised.value) == (
        f"Settings.from_env: {name} is {value!r}, a number without a unit: expected a positive datetime.timedelta, "
        f"e.g. {example} ({PREFIX}{name.upper()} takes {unit})"
    )


@pytest.mark.parametrize(("name", "unit", "example"), DURATIONS)
@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1), True, "60", "soon", None])
def test_a_duration_argument_is_a_positive_timedelta(name: str, unit: str, example: str, value: object) -> None:
    if value is None:  # None is "not given": the variable, else the default
        assert getattr(Settings.from_env(BASE, **{name: value}), name) > 0  # type: ignore[misc]
        return
    with pytest.raises(ConfigurationError, match=rf"^Settings.from_env: {name} is .*: expected a positive datetime"):
        Settings.from_env(BASE, **{name: value})  # type: ignore[misc]


@pytest.mark.parametrize(("name", "unit", "example"), DURATIONS)
def test_a_duration_is_a_timedelta_as_argument_and_a_number_of_its_unit_in_the_variable(
    name: str, unit: str, example: str
) -> None:
    variable = {PREFIX + name.upper(): "250"}
    in_variable = getattr(Settings.from_env({**BASE, **variable}), name)
    argument_wins = Settings.from_env({**BASE, **variable}, **{name: timedelta(minutes=2)})  # type: ignore[misc]

    assert in_variable == (0.25 if unit == "milliseconds" else 250.0)
    assert getattr(argument_wins, name) == 120.0


# --- switches ---------------------------------------------------------------------------------------------------


def test_a_switch_default_comes_from_the_table() -> None:
    assert read_flag("CAPTURE_HEADERS", environ={}) is True
    assert read_flag("PROCESSOR", environ={}) is False
    assert read_flag("PROCESSOR", environ={PREFIX + "PROCESSOR": "on"}) is True
    with pytest.raises(ConfigurationError, match=r"processor \(OTEL_EXPORTER_MATOMO_PROCESSOR\) is 'maybe'"):
        read_flag("PROCESSOR", environ={PREFIX + "PROCESSOR": "maybe"})
    with pytest.raises(ValueError, match="NOT_A_SWITCH is not in SWITCHES"):
        read_flag("NOT_A_SWITCH", environ={})


# --- the README -------------------------------------------------------------------------------------------------


def test_the_readme_reference_is_generated_from_the_tables() -> None:
    readme = Path(_reference.README).read_text(encoding="utf-8")

    assert _reference.render(readme) == readme, (
        "README.md's configuration reference differs from the option tables: run `python -m otel_matomo._reference`"
    )
    for option in (*SETTINGS_OPTIONS.options, *SWITCHES.options):
        assert f"| `{PREFIX}{option.suffix}` |" in readme
    for option in GATEWAY_OPTIONS.options:
        assert f"| `OTEL_MATOMO_GATEWAY_{option.suffix}` |" in readme


def test_render_replaces_a_stale_section_and_keeps_the_rest(tmp_path: Path) -> None:
    stale = "intro\n<!-- options:start -->\n| old |\n<!-- options:end -->\nmiddle\n"
    stale += "<!-- gateway-options:start -->\n<!-- gateway-options:end -->\noutro\n"
    readme = tmp_path / "README.md"
    readme.write_text(stale, encoding="utf-8")

    assert _reference.main(["--check", "--readme", str(readme)]) == 1
    assert readme.read_text(encoding="utf-8") == stale
    assert _reference.main(["--readme", str(readme)]) == 0
    rendered = readme.read_text(encoding="utf-8")

    assert "| old |" not in rendered
    assert rendered.startswith("intro\n<!-- options:start -->\n| variable | argument | default | meaning |")
    assert "| `OTEL_EXPORTER_MATOMO_BATCH_SIZE` | `batch_size` | `500` |" in rendered
    assert "| `OTEL_MATOMO_GATEWAY_PORT` | `--port` | `4318` |" in rendered
    assert "\nmiddle\n" in rendered
    assert rendered.endswith("<!-- gateway-options:end -->\noutro\n")
    assert _reference.main(["--check", "--readme", str(readme)]) == 0


def test_render_refuses_a_readme_without_markers() -> None:
    with pytest.raises(ValueError, match="options:start"):
        _reference.render("no markers here\n")
