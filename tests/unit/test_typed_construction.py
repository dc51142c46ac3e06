"""Typed construction: ``MatomoSpanExporter``, ``MatomoSpanProcessor`` and ``Settings.from_env`` take the keyword
options of one documented ``TypedDict``, so that mypy (and IDEs) catch a misspelt option or a wrong type before
anything runs, and the runtime errors name the class the user called and the option they meant.

Every test passes an ``environ`` dict or builds in dry-run mode: the process environment is never read or changed.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
import typing
from datetime import timedelta
from pathlib import Path

import pytest

from otel_matomo import ConfigurationError, MatomoSpanExporter, MatomoSpanProcessor, Settings
from otel_matomo._kinds import Duration
from otel_matomo._settings import SETTINGS_OPTIONS
from otel_matomo.exporter import MatomoOptions

DRY = {"dry_run": True, "visitor_id_secret": "typed-construction-secret"}
CLASSES = [MatomoSpanExporter, MatomoSpanProcessor]


@pytest.fixture
def built() -> typing.Iterator[list[MatomoSpanExporter | MatomoSpanProcessor]]:
    made: list[MatomoSpanExporter | MatomoSpanProcessor] = []
    yield made
    for each in made:
        each.shutdown()


# --- mypy -------------------------------------------------------------------------------------------------------

SNIPPET = """
from datetime import timedelta

from otel_matomo import MatomoSpanExporter, MatomoSpanProcessor, Settings

MatomoSpanExporter(endpoint="https://matomo.example.com", site_id=1, timeout=timedelta(seconds=5))
MatomoSpanExporter(endpont="https://matomo.example.com", site_id=1)
MatomoSpanExporter(endpoint="https://matomo.example.com", site_id="one")
MatomoSpanExporter(endpoint="https://matomo.example.com", site_id=1, timeout=5000)
MatomoSpanProcessor(schedule_delay=0.5, visitor_id="weekly")
Settings.from_env({}, buffer_max_age=86400)
"""


def test_mypy_rejects_a_misspelt_option_and_a_wrong_type(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is in the dev extra")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(SNIPPET), encoding="utf-8")

    out, _err, status = api.run(["--strict", "--cache-dir", str(tmp_path / "cache"), str(snippet)])

    errors: dict[int, str] = {}
    for line in out.splitlines():
        if ": error:" in line:
            number = int(line.split(":")[1])
            errors[number] = errors.get(number, "") + line
    assert status == 1, out
    assert 6 not in errors, "the correct call is accepted"
    assert 'Unexpected keyword argument "endpont" for "MatomoSpanExporter"' in errors[7]
    assert 'Argument "site_id" to "MatomoSpanExporter" has incompatible type "str"' in errors[8]
    assert 'Argument "timeout" to "MatomoSpanExporter" has incompatible type "int"; expected "timedelta' in errors[9]
    assert 'Argument "schedule_delay" to "MatomoSpanProcessor" has incompatible type "float"' in errors[10]
    assert 'Argument "visitor_id" to "MatomoSpanProcessor" has incompatible type' in errors[10]
    assert 'Argument "buffer_max_age" to "from_env" of "Settings" has incompatible type "int"' in errors[11]


# --- the one list of options ------------------------------------------------------------------------------------


def test_each_option_is_documented_where_an_ide_shows_it() -> None:
    source = inspect.getsource(inspect.getmodule(MatomoOptions))  # type: ignore[arg-type]
    [body] = [node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)]
    documented = {
        target.target.id
        for target, after in itertools.pairwise(body.body)
        if isinstance(target, ast.AnnAssign) and isinstance(target.target, ast.Name)
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and str(after.value.value).strip()
    }

    assert documented == set(typing.get_type_hints(MatomoOptions))


def test_every_duration_is_a_timedelta_and_nothing_else_is() -> None:
    hints = typing.get_type_hints(MatomoOptions)
    durations = {option.name for option in SETTINGS_OPTIONS.options if isinstance(option.kind, Duration)}

    assert durations == {"timeout", "schedule_delay", "buffer_max_age"}
    assert {name for name, hint in hints.items() if timedelta in typing.get_args(hint)} == durations


@pytest.mark.parametrize("cls", CLASSES)
def test_the_classes_take_the_options_as_keywords_only(cls: type) -> None:
    parameters = inspect.signature(cls).parameters

    assert parameters["options"].kind is inspect.Parameter.VAR_KEYWORD
    assert all(parameter.kind is inspect.Parameter.KEYWORD_ONLY for parameter in list(parameters.values())[:-1])


# --- runtime errors name the class and the nearest option -------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("typo", "meant"),
    [("endpont", "endpoint"), ("siteid", "site_id"), ("token", "token_auth"), ("timeout_ms", "timeout")],
)
def test_a_misspelt_option_names_the_class_and_the_option_meant(cls: type, typo: str, meant: str) -> None:
    message = f"{cls.__name__}() got an unexpected keyword argument '{typo}'. Did you mean '{meant}'?"

    with pytest.raises(TypeError) as raised:
        cls(**DRY, **{typo: 1})

    assert str(raised.value) == message


def test_from_env_names_itself_and_nothing_is_suggested_when_nothing_is_close() -> None:
    with pytest.raises(TypeError) as raised:
        Settings.from_env({}, colour="blue")  # type: ignore[call-arg]

    assert str(raised.value) == "Settings.from_env() got an unexpected keyword argument 'colour'"


@pytest.mark.parametrize("cls", CLASSES)
def test_settings_and_options_together_name_the_class(cls: type) -> None:
    settings = Settings.from_env({}, dry_run=True, visitor_id_secret="typed-construction-secret")

    with pytest.raises(TypeError, match=rf"^{cls.__name__}\(\) takes settings= or keyword options, not both$"):
        cls(settings=settings, site_id=2)


@pytest.mark.parametrize("cls", CLASSES)
def test_a_bare_number_for_a_duration_is_refused_by_the_class_called(cls: type) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cls(**DRY, timeout=5000)

    assert str(raised.value) == (
        f"{cls.__name__}: timeout is 5000, a number without a unit: expected a positive datetime.timedelta, "
        "e.g. timedelta(seconds=10) (OTEL_EXPORTER_MATOMO_TIMEOUT takes milliseconds)"
    )


@pytest.mark.parametrize("cls", CLASSES)
def test_an_invalid_value_names_the_class_the_option_and_its_variable(cls: type) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cls(endpoint="https://matomo.example.com", site_id="one")

    assert str(raised.value) == (
        f"{cls.__name__}: site_id (OTEL_EXPORTER_MATOMO_SITE_ID) is 'one': expected a positive whole number, the "
        "Matomo idsite, e.g. 1"
    )


def test_typed_options_are_what_the_classes_run_with(built: list[MatomoSpanExporter | MatomoSpanProcessor]) -> None:
    options: MatomoOptions = {
        **DRY,  # type: ignore[typeddict-item]
        "timeout": timedelta(seconds=3),
        "schedule_delay": timedelta(milliseconds=250),
        "buffer_max_age": timedelta(hours=2),
        "forwarded_header": "forwarded",
        "spool_dir": None,
    }
    exporter = MatomoSpanExporter(**options)
    processor = MatomoSpanProcessor(**options)
    built.extend([exporter, processor])

    for settings in (exporter.settings, processor.settings):
        assert (settings.timeout, settings.schedule_delay, settings.buffer_max_age) == (3.0, 0.25, 7200.0)
        assert settings.forwarded_header == "forwarded"
