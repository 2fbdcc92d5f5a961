"""API tokens through the real process: the options, the start-up warning, the client.

The token options are parsed in-process; that the warning reaches stderr, and
that ``taskq.Client`` and the client commands send the token, is checked
against ``python -m taskq``.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from taskq import Client, config
from taskq.cli import exposure_warning, parse_settings
from taskq.client import ClientError
from taskq.config import Settings
from tests.system.conftest import ROOT, Launcher, clean_environ

pytestmark = pytest.mark.sqlite_only

TOKEN = "system-token-0123456789"
COMMAND_SECONDS = 30.0


def test_the_environment_lists_several_tokens() -> None:
    settings = parse_settings([], {"TASKQ_API_TOKEN": f" {TOKEN} ,, other-token-0123456789"})
    assert settings.api_tokens == (TOKEN, "other-token-0123456789")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("short", f"at least {config.API_TOKEN_MIN_LENGTH} characters"),
        ("with space 0123456789", "without spaces or commas"),
        ("ünïcödé-0123456789", "printable ASCII"),
    ],
)
def test_a_bad_token_exits_2_with_a_message(
    capsys: pytest.CaptureFixture[str], token: str, message: str
) -> None:
    for argv, environ in (([f"--api-token={token}"], {}), ([], {"TASKQ_API_TOKEN": token})):
        with pytest.raises(SystemExit) as exited:
            parse_settings(argv, environ)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_no_warning_on_loopback(host: str) -> None:
    assert exposure_warning(Settings(host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org", ""])
def test_a_warning_elsewhere_unless_a_token_is_set(host: str) -> None:
    warning = exposure_warning(Settings(host=host))
    assert warning is not None
    assert "without an API token" in warning
    assert "\n" not in warning
    assert exposure_warning(Settings(host=host, api_tokens=(TOKEN,))) is None


def test_binding_every_address_without_a_token_warns_on_stderr(launch: Launcher) -> None:
    server = launch("--host", "0.0.0.0")
    (line,) = [each for each in server.stderr().splitlines() if "warning" in each]
    assert line.startswith("taskq: warning: listening on 0.0.0.0 without an API token")


def test_the_client_and_the_client_commands_send_the_token(launch: Launcher) -> None:
    server = launch(env={"TASKQ_API_TOKEN": TOKEN})
    assert "warning" not in server.stderr()
    assert httpx.get(server.url + "/api/stats").status_code == 401

    with Client(server.url) as anonymous, pytest.raises(ClientError) as refused:
        anonymous.stats()
    assert refused.value.status == 401
    with Client(server.url, token=TOKEN) as client:
        task = client.submit("taskq.echo", {"n": 1})
        assert client.task(task["id"])["payload"] == {"n": 1}

    def command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "taskq", *args, "--url", server.url],
            cwd=ROOT,
            env=clean_environ(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            check=False,
        )

    without = command("show", str(task["id"]), env={})
    assert without.returncode == 1
    assert "401: an API token is required" in without.stderr
    from_env = command("show", str(task["id"]), env={"TASKQ_API_TOKEN": TOKEN})
    assert from_env.returncode == 0, from_env.stderr
    assert "taskq.echo" in from_env.stdout
    from_option = command("show", str(task["id"]), "--token", TOKEN, env={})
    assert from_option.returncode == 0, from_option.stderr
