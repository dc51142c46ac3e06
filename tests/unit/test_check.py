"""``otel-matomo check`` against loopback stand-ins: each check's verdicts, exit codes, and no token in output."""

from __future__ import annotations

import argparse
import io
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl

import pytest

from otel_matomo.cli import _check_environment, main
from otel_matomo.cli._check_matomo import PROBE_IP, PROBE_TITLE, TEST_HIT_TITLE
from otel_matomo.cli.check import run
from tests.matomo_reporting_stub import VIEW_TOKEN, MatomoReportingStub
from tests.matomo_standin import SECURE_ONLY_TOKEN, SUPERUSER_TOKEN, WRITE_TOKEN, MatomoStandIn

SECRET = "a-visitor-id-secret-of-some-length"
UNKNOWN_TOKEN = "e" * 32
ALL_TOKENS = (SUPERUSER_TOKEN, WRITE_TOKEN, SECURE_ONLY_TOKEN, VIEW_TOKEN, UNKNOWN_TOKEN)


@pytest.fixture
def stub() -> Iterator[MatomoReportingStub]:
    server = MatomoReportingStub().start()
    yield server
    server.stop()


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def lines(self, name: str) -> list[tuple[str, str]]:
        """``(verdict, message)`` of every line of check ``name``."""
        # "VERD  name-padded-to-15 message"
        return [(line[:4].strip(), line[22:]) for line in self.out.splitlines() if line[6:21].strip() == name]

    def verdict(self, name: str) -> str:
        (only,) = {verdict for verdict, _ in self.lines(name)}
        return only

    def message(self, name: str) -> str:
        return " | ".join(message for _, message in self.lines(name))


def check(
    url: str | None,
    token: str | None = None,
    site: int | str = 1,
    *,
    env: dict[str, str] | None = None,
    send_test_hit: bool = False,
    endpoint_argument: str | None = None,
    site_argument: str | None = None,
    out: io.StringIO | None = None,
) -> Outcome:
    environ = {"OTEL_EXPORTER_MATOMO_SITE_ID": str(site), "OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET": SECRET}
    if url is not None:
        environ["OTEL_EXPORTER_MATOMO_ENDPOINT"] = url
    if token is not None:
        environ["OTEL_EXPORTER_MATOMO_TOKEN_AUTH"] = token
    environ.update(env or {})
    stdout, stderr = out or io.StringIO(), io.StringIO()
    args = argparse.Namespace(endpoint=endpoint_argument, site_id=site_argument, send_test_hit=send_test_hit)
    code = run(args, environ=environ, out=stdout, err=stderr)
    outcome = Outcome(code, stdout.getvalue(), stderr.getvalue())
    for secret in ALL_TOKENS:
        assert secret not in outcome.out + outcome.err
    return outcome


def bulk_items(server: MatomoStandIn) -> list[dict[str, str]]:
    """Every bulk item received, as parameters."""
    items = []
    for received in server.received:
        requests = received.body.get("requests")
        assert isinstance(requests, list)
        items += [dict(parse_qsl(str(item).partition("?")[2])) for item in requests]
    return items


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- a working configuration -------------------------------------------------------------------------------


def test_superuser_token_passes_every_check_and_records_nothing(stub: MatomoReportingStub) -> None:
    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.code == 0, result.out
    assert result.verdict("endpoint") == "OK"
    assert "Matomo's tracker answers" in result.message("endpoint")
    assert result.verdict("site") == "OK"
    assert "site 1 exists: 'shop' (http://shop.example)" in result.message("site")
    assert result.verdict("token access") == "OK"
    assert "Super User" in result.message("token access")
    assert result.verdict("token in bulk") == "OK"
    assert result.verdict("test hit") == "SKIP"
    assert result.out.splitlines()[-1] == "otel-matomo check: 0 failed, 1 warning"  # header capture, see below
    # The probe carries cip (needs the token) but no rec=1: validated, never recorded.
    (probe,) = bulk_items(stub)
    assert probe["cip"] == PROBE_IP
    assert probe["action_name"] == PROBE_TITLE
    assert "rec" not in probe
    assert stub.tracked == []


def test_the_token_travels_in_post_bodies_only(stub: MatomoReportingStub) -> None:
    check(stub.url, SUPERUSER_TOKEN)

    assert stub.api_calls, "the Reporting API was not asked"
    assert all(call.body.get("token_auth") == SUPERUSER_TOKEN for call in stub.api_calls)
    assert all("token_auth" not in call.query for call in stub.api_calls)
    assert all(SUPERUSER_TOKEN not in line for line in stub.request_lines)
    assert all(received.body.get("token_auth") == SUPERUSER_TOKEN for received in stub.received)
    methods = [call.method for call in stub.api_calls]
    assert methods == ["SitesManager.getSiteFromId", "UsersManager.hasSuperUserAccess"]


def test_write_role_token_is_enough(stub: MatomoReportingStub) -> None:
    result = check(stub.url, WRITE_TOKEN)

    assert result.code == 0, result.out
    assert result.verdict("token access") == "OK"
    assert "write access to site 1" in result.message("token access")
    assert result.verdict("token in bulk") == "OK"


def test_arguments_override_the_environment(stub: MatomoReportingStub) -> None:
    result = check("http://127.0.0.1:9/nowhere", SUPERUSER_TOKEN, site=7, endpoint_argument=stub.url, site_argument="2")

    assert result.code == 0, result.out
    assert "site 2 exists: 'store'" in result.message("site")
    assert f"endpoint {stub.url}/matomo.php, site 2" in result.message("configuration")


# --- the token ---------------------------------------------------------------------------------------------


def test_secure_only_token_fails_in_bulk_with_the_reason(stub: MatomoReportingStub) -> None:
    result = check(stub.url, SECURE_ONLY_TOKEN)

    assert result.code == 1
    assert result.verdict("token access") == "OK"
    assert result.verdict("token in bulk") == "FAIL"
    message = result.message("token in bulk")
    assert "'secure only'" in message
    assert "#22910" in message
    assert "Only allow secure requests" in message
    assert "1 failed" in result.out.splitlines()[-1]


def test_view_token_fails_on_write_access_and_skips_the_bulk_probe(stub: MatomoReportingStub) -> None:
    result = check(stub.url, VIEW_TOKEN)

    assert result.code == 1
    assert result.verdict("site") == "OK"
    assert result.verdict("token access") == "FAIL"
    assert "view access only to site 1" in result.message("token access")
    assert "write or admin" in result.message("token access")
    assert result.verdict("token in bulk") == "SKIP"
    assert stub.received == []


def test_unknown_token_fails(stub: MatomoReportingStub) -> None:
    result = check(stub.url, UNKNOWN_TOKEN)

    assert result.code == 1
    assert result.verdict("site") == "FAIL"
    assert "does not accept the token_auth" in result.message("site")
    assert result.verdict("token access") == "SKIP"
    assert result.verdict("token in bulk") == "SKIP"


def test_no_token_warns_and_checks_the_site_through_the_tracker(stub: MatomoReportingStub) -> None:
    result = check(stub.url)

    assert result.code == 0, result.out
    assert result.verdict("site") == "OK"
    assert "tracker accepted a probe" in result.message("site")
    assert result.verdict("token access") == "WARN"
    assert "server's IP for every visitor" in result.message("token access")
    assert result.verdict("token in bulk") == "SKIP"
    assert stub.api_calls == []
    (probe,) = bulk_items(stub)
    assert "cip" not in probe
    assert "rec" not in probe
    assert stub.tracked == []


# --- the site ----------------------------------------------------------------------------------------------


def test_unknown_site_with_a_superuser_token(stub: MatomoReportingStub) -> None:
    result = check(stub.url, SUPERUSER_TOKEN, site=99)

    assert result.code == 1
    assert result.verdict("site") == "FAIL"
    assert "site 99 does not exist" in result.message("site")
    assert result.verdict("token in bulk") == "SKIP"
    assert stub.received == []


def test_unknown_site_with_a_view_token_names_both_causes(stub: MatomoReportingStub) -> None:
    result = check(stub.url, VIEW_TOKEN, site=99)

    assert result.code == 1
    assert result.verdict("site") == "FAIL"
    assert "no access to site 99, or there is no site 99" in result.message("site")


def test_unknown_site_without_token(stub: MatomoReportingStub) -> None:
    result = check(stub.url, site=99)

    assert result.code == 1
    assert result.verdict("site") == "FAIL"
    assert "refuses site 99" in result.message("site")


def test_reporting_api_blocked_warns_and_the_bulk_probe_still_decides(stub: MatomoReportingStub) -> None:
    stub.reporting = False

    good = check(stub.url, SUPERUSER_TOKEN)
    assert good.code == 0, good.out
    assert good.verdict("site") == "WARN"
    assert "Reporting API does not answer" in good.message("site")
    assert "HTTP 403" in good.message("site")
    assert good.verdict("token access") == "SKIP"
    assert good.verdict("token in bulk") == "OK"

    secure_only = check(stub.url, SECURE_ONLY_TOKEN)
    assert secure_only.code == 1
    message = secure_only.message("token in bulk")
    assert "may not write to site 1, there is no site 1, or the token is 'secure only'" in message


# --- the endpoint ------------------------------------------------------------------------------------------


def test_connection_refused() -> None:
    result = check(f"http://127.0.0.1:{free_port()}", SUPERUSER_TOKEN)

    assert result.code == 1
    assert result.verdict("endpoint") == "FAIL"
    assert "connection refused" in result.message("endpoint")
    for name in ("site", "token access", "token in bulk"):
        assert result.verdict(name) == "SKIP"


def test_not_matomo(stub: MatomoReportingStub) -> None:
    stub.tracker_page = b"<html><head><title>Welcome to nginx!</title></head><body>Welcome</body></html>"

    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.code == 1
    assert result.verdict("endpoint") == "FAIL"
    assert result.message("endpoint").startswith("not Matomo:")
    assert "Welcome to nginx!" in result.message("endpoint")
    assert result.verdict("site") == "SKIP"


@pytest.mark.parametrize(("status", "expected"), [(500, "HTTP error 500"), (403, "HTTP error 403")])
def test_http_error(stub: MatomoReportingStub, status: int, expected: str) -> None:
    stub.tracker_status = status

    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.code == 1
    assert result.verdict("endpoint") == "FAIL"
    assert expected in result.message("endpoint")


def test_no_matomo_php_at_that_path(stub: MatomoReportingStub) -> None:
    result = check(f"{stub.url}/analytics/tracker.php", SUPERUSER_TOKEN)

    assert result.verdict("endpoint") == "FAIL"
    assert "HTTP 404" in result.message("endpoint")


def test_a_server_that_only_takes_post(standin: MatomoStandIn) -> None:
    result = check(standin.url, SUPERUSER_TOKEN)

    assert result.verdict("endpoint") == "FAIL"
    assert "HTTP error 501" in result.message("endpoint")


def test_redirect(stub: MatomoReportingStub) -> None:
    stub.redirect_to = "https://matomo.example/matomo.php?secret=1"

    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.verdict("endpoint") == "FAIL"
    message = result.message("endpoint")
    assert "redirects (HTTP 301) to https://matomo.example/matomo.php:" in message
    assert "secret" not in message


def test_an_empty_answer_is_a_warning_and_the_bulk_probe_decides(stub: MatomoReportingStub) -> None:
    stub.tracker_status, stub.tracker_page = 204, b""

    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.code == 0, result.out
    assert result.verdict("endpoint") == "WARN"
    assert result.verdict("token in bulk") == "OK"


def test_bulk_http_error(stub: MatomoReportingStub) -> None:
    stub.behaviour.status = 500

    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.code == 1
    assert result.verdict("token in bulk") == "FAIL"
    assert "HTTP 500" in result.message("token in bulk")


def test_bulk_answer_that_is_not_matomo(stub: MatomoReportingStub) -> None:
    stub.behaviour.body = b"<html>hello</html>"

    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.verdict("token in bulk") == "FAIL"
    assert "does not answer as Matomo's bulk tracking API" in result.message("token in bulk")


# --- the test hit ------------------------------------------------------------------------------------------


def test_send_test_hit_records_one_page_view(stub: MatomoReportingStub) -> None:
    result = check(stub.url, SUPERUSER_TOKEN, send_test_hit=True)

    assert result.code == 0, result.out
    assert result.verdict("test hit") == "OK"
    (hit,) = stub.tracked
    assert hit["action_name"] == TEST_HIT_TITLE
    assert hit["rec"] == "1"
    assert hit["bots"] == "1"
    assert hit["url"] == "http://shop.example/otel-matomo-check"
    assert hit["cid"] in result.message("test hit")


def test_send_test_hit_without_token(stub: MatomoReportingStub) -> None:
    result = check(stub.url, send_test_hit=True)

    assert result.verdict("test hit") == "OK"
    (hit,) = stub.tracked
    assert "url" not in hit  # the site's URL is unknown without the Reporting API
    assert "token_auth" not in stub.received[-1].body


def test_no_test_hit_for_a_missing_site(stub: MatomoReportingStub) -> None:
    result = check(stub.url, SUPERUSER_TOKEN, site=99, send_test_hit=True)

    assert result.verdict("test hit") == "SKIP"
    assert stub.tracked == []


# --- configuration -----------------------------------------------------------------------------------------


def test_configuration_error_exits_2() -> None:
    result = check("http://127.0.0.1:1", site="abc")

    assert result.code == 2
    assert result.out == ""
    assert "invalid configuration" in result.err
    assert "OTEL_EXPORTER_MATOMO_SITE_ID" in result.err


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("http://127.0.0.1:notaport", "has the port 'notaport'"),
        ("http://127.0.0.1:70000", "has the port '70000'"),
        ("http://tracker:Pa55w0rdXyz@127.0.0.1:1", "holds credentials before the host ('…@127.0.0.1:1')"),
        (
            f"http://127.0.0.1:1/matomo.php?token_auth={WRITE_TOKEN}",
            "is 'http://127.0.0.1:1/matomo.php' with a token_auth in its query",
        ),
    ],
)
def test_an_invalid_endpoint_exits_2_with_one_line(endpoint: str, problem: str) -> None:
    for result in (check(endpoint), check("https://matomo.example.com", endpoint_argument=endpoint)):
        assert result.code == 2
        assert result.out == ""
        [line] = result.err.splitlines()
        assert line.startswith(
            f"otel-matomo check: invalid configuration: endpoint (OTEL_EXPORTER_MATOMO_ENDPOINT) {problem}"
        )
        assert "Pa55w0rdXyz" not in line


def test_a_misspelt_variable_is_named_with_the_configuration_error_it_causes() -> None:
    result = check("http://127.0.0.1:1", env={"OTEL_EXPORTER_MATOMO_SITE_ID": "", "OTEL_EXPORTER_MATOMO_SITEID": "1"})

    assert result.code == 2
    assert result.err.splitlines() == [
        "otel-matomo: OTEL_EXPORTER_MATOMO_SITEID is not a variable otel-matomo reads, so it changes nothing: "
        "did you mean OTEL_EXPORTER_MATOMO_SITE_ID?",
        "otel-matomo check: invalid configuration: site_id (OTEL_EXPORTER_MATOMO_SITE_ID) is not set: expected a "
        "positive whole number, the Matomo idsite, e.g. 1",
    ]


def test_a_misspelt_variable_is_a_warn_line(stub: MatomoReportingStub) -> None:
    result = check(stub.url, SUPERUSER_TOKEN, env={"OTEL_EXPORTER_MATOMO_EXCLUDE_PATH": "/internal/*"})

    assert (
        "WARN",
        "otel-matomo: OTEL_EXPORTER_MATOMO_EXCLUDE_PATH is not a variable otel-matomo reads, so it changes nothing: "
        "did you mean OTEL_EXPORTER_MATOMO_EXCLUDE_PATHS?",
    ) in result.lines("configuration")
    assert result.err == ""


def test_invalid_capture_headers_flag_exits_2(stub: MatomoReportingStub) -> None:
    result = check(stub.url, env={"OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS": "maybe"})

    assert result.code == 2
    assert "OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS" in result.err


def test_settings_warnings_become_warn_lines(stub: MatomoReportingStub) -> None:
    result = check(stub.url, env={"OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET": ""})

    messages = [message for verdict, message in result.lines("configuration") if verdict == "WARN"]
    assert any("VISITOR_ID_SECRET" in message for message in messages)
    assert result.err == ""


def test_dry_run_without_endpoint_skips_the_network() -> None:
    result = check(None, env={"OTEL_EXPORTER_MATOMO_DRY_RUN": "true"})

    assert result.code == 0, result.out
    assert any("DRY_RUN is on" in message for _, message in result.lines("configuration"))
    for name in ("endpoint", "site", "token access", "token in bulk", "test hit"):
        assert result.verdict(name) == "SKIP"


# --- what the application's process would run with ---------------------------------------------------------


def test_zero_code_with_distro_defaults_fails_sdk_start_up(
    stub: MatomoReportingStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def problems(environ: object, **kwargs: object) -> list[str]:
        seen.append(kwargs)
        return ["OTEL_METRICS_EXPORTER is unset ... run untraced"]

    monkeypatch.setattr(_check_environment, "sdk_exporter_problems", problems)
    result = check(stub.url, SUPERUSER_TOKEN, env={"OTEL_TRACES_EXPORTER": "matomo"})

    assert result.code == 1
    assert result.verdict("sdk start-up") == "FAIL"
    assert seen == [{"load": True}]
    assert result.verdict("header capture") == "OK"
    assert "handed over by otel-matomo" in result.message("header capture")


def test_zero_code_with_exporters_present(stub: MatomoReportingStub) -> None:
    env = {"OTEL_TRACES_EXPORTER": "console,matomo", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "console"}

    result = check(stub.url, SUPERUSER_TOKEN, env=env)

    assert result.code == 0, result.out
    assert result.verdict("sdk start-up") == "OK"


def test_in_code_configuration_skips_sdk_start_up_and_warns_about_capture(stub: MatomoReportingStub) -> None:
    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.verdict("sdk start-up") == "SKIP"
    assert result.verdict("header capture") == "WARN"
    assert "no request headers are captured" in result.message("header capture")
    assert result.code == 0


def test_capture_from_the_variable_and_semconv(stub: MatomoReportingStub) -> None:
    env = {
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": ".*",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup",
    }

    result = check(stub.url, SUPERUSER_TOKEN, env=env)

    assert result.verdict("header capture") == "OK"
    assert "from OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST" in result.message("header capture")
    assert result.verdict("semconv") == "OK"
    assert "both the old and the stable" in result.message("semconv")


# --- output ------------------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(stub: MatomoReportingStub) -> None:
    plain = check(stub.url, SUPERUSER_TOKEN)
    assert "\033[" not in plain.out

    coloured = check(stub.url, SUPERUSER_TOKEN, out=Terminal())
    assert "\033[32mOK  \033[0m  endpoint" in coloured.out

    no_color = check(stub.url, SUPERUSER_TOKEN, env={"NO_COLOR": "1"}, out=Terminal())
    assert "\033[" not in no_color.out


def test_a_token_echoed_by_matomo_is_masked(stub: MatomoReportingStub) -> None:
    stub.behaviour.status = 500
    stub.behaviour.body = None
    stub.tracker_page = b"Matomo tracking API, token " + SUPERUSER_TOKEN.encode()
    stub.tracker_status = 500

    result = check(stub.url, SUPERUSER_TOKEN)  # check() asserts the token is absent

    assert "***" in result.message("endpoint")


def test_cli_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "--help"])

    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "--send-test-hit" in text
    assert "--endpoint" in text
    assert "--site-id" in text
    assert "0  no check failed" in text
    assert "1  at least one check failed" in text
    assert "2  configuration error" in text


def test_cli_runs_check(
    stub: MatomoReportingStub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_MATOMO_DRY_RUN", "OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_MATOMO_TOKEN_AUTH", SECURE_ONLY_TOKEN)
    monkeypatch.setenv("OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET", SECRET)
    monkeypatch.delenv("OTEL_EXPORTER_MATOMO_ENDPOINT", raising=False)

    code = main(["check", "--endpoint", stub.url, "--site-id", "1"])

    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  token in bulk" in out
    assert SECURE_ONLY_TOKEN not in out


def test_cli_configuration_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_MATOMO_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_MATOMO_DRY_RUN", raising=False)

    code = main(["check", "--site-id", "1"])

    assert code == 2
    assert "OTEL_EXPORTER_MATOMO_ENDPOINT" in capsys.readouterr().err


def test_zero_code_with_a_missing_configurator_fails_sdk_start_up(stub: MatomoReportingStub) -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "matomo",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_CONFIGURATOR": "not-installed",
    }

    result = check(stub.url, SUPERUSER_TOKEN, env=env)

    assert result.code == 1
    assert result.verdict("sdk start-up") == "FAIL"
    assert "OTEL_PYTHON_CONFIGURATOR names the configurator 'not-installed'" in result.message("sdk start-up")


def test_zero_code_fails_when_no_installed_framework_is_instrumented(
    stub: MatomoReportingStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_check_environment, "installed_instrumentors", frozenset)
    env = {"OTEL_TRACES_EXPORTER": "matomo", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}

    result = check(stub.url, SUPERUSER_TOKEN, env=env)

    assert result.code == 1
    assert result.verdict("instrumentation") == "FAIL"
    assert "pip install 'otel-matomo[flask]'" in result.out


def test_zero_code_warns_beside_an_instrumented_framework(
    stub: MatomoReportingStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_check_environment, "installed_instrumentors", lambda: frozenset({"django"}))
    env = {"OTEL_TRACES_EXPORTER": "matomo", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}

    result = check(stub.url, SUPERUSER_TOKEN, env=env)

    assert "FAIL" not in result.out
    assert "ignore this if the application is a Django application" in result.out


def test_django_beside_an_asgi_server_without_the_asgi_instrumentation_fails(
    stub: MatomoReportingStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_check_environment, "importable", lambda module: False)

    result = check(stub.url, SUPERUSER_TOKEN)

    assert result.code == 1
    assert "Django and uvicorn" in result.out
    assert "pip install opentelemetry-instrumentation-asgi" in result.out
