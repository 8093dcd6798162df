"""`serve`'s configuration: flag > environment > TOML file > default, via `--print-config`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline_events import cli
from pipeline_events.service import config
from tests.service.conftest import CLI

README = Path(__file__).parents[2] / "README.md"
SOURCE = re.compile(r"^(# )?(?P<key>[a-z-]+)( = (?P<value>.*?)| is unset)  # (?P<source>.+)$")


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without any PIPELINE_EVENTS_ variable, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(config.ENV_PREFIX)}
    return {**env, **variables}


def serve(*args: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "serve", *args], capture_output=True, text=True, timeout=60, cwd=cwd,
        env=clean_env(**variables),
    )  # fmt: skip


def print_config(*args: str, cwd: Path, **variables: str) -> dict[str, tuple[object, str]]:
    """key -> (value, source) from `serve --print-config`; the output is TOML too."""
    result = serve("--print-config", *args, cwd=cwd, **variables)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    values = tomllib.loads(result.stdout)
    found: dict[str, tuple[object, str]] = {}
    for line in result.stdout.splitlines():
        match = SOURCE.match(line)
        if match:
            key = match["key"]
            found[key] = (values.get(key), match["source"])
    return found


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pipeline-events serve: ")
    assert result.stdout == ""
    return lines[0]


def test_a_flag_wins_over_the_environment_over_the_file_over_the_default(tmp_path: Path) -> None:
    (tmp_path / "serve.toml").write_text(
        'max-event-bytes = 1000\npublish-rate = 5\nslow_call_ms = 7\nlog-format = "json"\n'
        "no-reflection = true\n"
    )
    found = print_config(
        "--max-event-bytes", "3000", "--config", "serve.toml", cwd=tmp_path,
        PIPELINE_EVENTS_MAX_EVENT_BYTES="2000", PIPELINE_EVENTS_PUBLISH_RATE="6",
        PIPELINE_EVENTS_INSECURE="yes", PIPELINE_EVENTS_LOG_LEVEL="",  # empty: unset
    )  # fmt: skip
    assert found["max-event-bytes"] == (3000, "flag")
    assert found["publish-rate"] == (6, "env PIPELINE_EVENTS_PUBLISH_RATE")
    assert found["insecure"] == (True, "env PIPELINE_EVENTS_INSECURE")
    assert found["slow-call-ms"] == (7, "file serve.toml")
    assert found["log-format"] == ("json", "file serve.toml")
    assert found["no-reflection"] == (True, "file serve.toml")
    assert found["log-level"] == ("info", "default")
    assert found["listen"] == ("127.0.0.1:50051", "default")
    assert found["store"] == ("sqlite:///./pipeline-events.db", "default")
    assert found["auth"] == (None, "default")  # unset: a comment line


def test_the_file_may_come_from_the_environment_and_the_output_reads_back(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('listen = "127.0.0.1:6000"\nmax_event_bytes = 4096\n')
    found = print_config(cwd=tmp_path, PIPELINE_EVENTS_CONFIG="a.toml")
    assert found["listen"] == ("127.0.0.1:6000", "file a.toml")
    assert found["max-event-bytes"] == (4096, "file a.toml")
    # What --print-config prints is a config file that gives the same configuration.
    result = serve("--print-config", "--insecure", "--slow-call-ms", "5", cwd=tmp_path,
                   PIPELINE_EVENTS_CONFIG="a.toml")  # fmt: skip
    (tmp_path / "b.toml").write_text(result.stdout)
    again = print_config("--config", "b.toml", cwd=tmp_path)
    for key, (value, _) in print_config(
        "--insecure", "--slow-call-ms", "5", cwd=tmp_path, PIPELINE_EVENTS_CONFIG="a.toml"
    ).items():
        assert again[key][0] == value, key
        assert again[key][1] == ("default" if value is None else "file b.toml"), key


def test_an_unknown_key_is_one_line_naming_it_and_the_file(tmp_path: Path) -> None:
    (tmp_path / "serve.toml").write_text('listen = "127.0.0.1:1"\nmax-events-bytes = 10\n')
    line = one_line_error(serve("--config", "serve.toml", "--print-config", cwd=tmp_path))
    assert "serve.toml" in line and "'max-events-bytes'" in line and "unknown key" in line
    (tmp_path / "twice.toml").write_text("slow-call-ms = 1\nslow_call_ms = 2\n")
    line = one_line_error(serve("--config", "twice.toml", "--print-config", cwd=tmp_path))
    assert "twice.toml" in line and "'slow-call-ms'" in line


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("PIPELINE_EVENTS_MAX_EVENT_BYTES", "abc", "'abc'"),
        ("PIPELINE_EVENTS_SLOW_CALL_MS", "-5", "'-5'"),
        ("PIPELINE_EVENTS_INSECURE", "maybe", "'maybe'"),
        ("PIPELINE_EVENTS_LOG_LEVEL", "loud", "'loud'"),
        ("PIPELINE_EVENTS_LISTEN", "nowhere", "'nowhere'"),
        ("PIPELINE_EVENTS_STALLED_STREAM_TIMEOUT", "0", "'0'"),
    ],
)
def test_a_bad_value_from_the_environment_is_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, named: str
) -> None:
    for args in (["--print-config"], []):  # refused before serving, too
        line = one_line_error(serve(*args, cwd=tmp_path, **{variable: value}))
        assert f"env {variable}:" in line and named in line


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('max-event-bytes = "abc"', "max-event-bytes"),
        ("max-event-bytes = 1.5", "max-event-bytes"),
        ('insecure = "maybe"', "insecure"),
        ("insecure = 2", "insecure"),
        ('log-format = "xml"', "log-format"),
        ("publish-rate = true", "publish-rate"),
        ("store = [1, 2]", "store"),
        ("listen = [oops", "not valid TOML"),
    ],
)
def test_a_bad_value_in_the_file_is_one_line_naming_the_file_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    (tmp_path / "serve.toml").write_text(text + "\n")
    line = one_line_error(serve("--config", "serve.toml", "--print-config", cwd=tmp_path))
    assert "serve.toml" in line and named in line


def test_a_bad_flag_and_a_missing_file_are_one_line(tmp_path: Path) -> None:
    line = one_line_error(serve("--slow-call-ms", "soon", cwd=tmp_path))
    assert "--slow-call-ms" in line and "'soon'" in line
    line = one_line_error(serve("--print-config", cwd=tmp_path, PIPELINE_EVENTS_CONFIG="no.toml"))
    assert "no.toml" in line


def test_passwords_and_tokens_in_the_store_url_are_redacted(tmp_path: Path) -> None:
    secret_url = (
        "nats://ingest:hunter2-secret@127.0.0.1:4222,127.0.0.2:4222?stream=EV&token=tok-s3cret"
    )
    result = serve("--print-config", "--store", secret_url, cwd=tmp_path)
    assert result.returncode == 0
    assert "hunter2" not in result.stdout and "s3cret" not in result.stdout
    found = print_config("--store", secret_url, cwd=tmp_path)
    assert found["store"] == (
        "nats://ingest:***@127.0.0.1:4222,127.0.0.2:4222?stream=EV&token=***",
        "flag",
    )
    assert config.redact_url("nats://just-a-token@h:4222") == "nats://***@h:4222"
    assert (
        config.redact_url("nats://h:4222?user=u&password=p") == "nats://h:4222?user=u&password=***"
    )
    assert config.shown("sqlite:///./x.db?durability=power") == "sqlite:///./x.db?durability=power"
    # File paths are not secrets: shown as they are.
    auth = tmp_path / "principals.toml"
    auth.write_text("")
    assert print_config("--auth", str(auth), cwd=tmp_path)["auth"] == (str(auth), "flag")


def test_the_client_tls_variables_are_not_the_servers(tmp_path: Path) -> None:
    """PIPELINE_EVENTS_TLS_CERT/KEY are a client's own: serve reads ..._SERVER_TLS_CERT/KEY."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("")
    key.write_text("")
    found = print_config(
        cwd=tmp_path, PIPELINE_EVENTS_TLS_CERT=str(cert), PIPELINE_EVENTS_TLS_KEY=str(key)
    )
    assert found["tls-cert"] == (None, "default") and found["tls-key"] == (None, "default")
    found = print_config(
        cwd=tmp_path, PIPELINE_EVENTS_SERVER_TLS_CERT=str(cert),
        PIPELINE_EVENTS_SERVER_TLS_KEY=str(key),
    )  # fmt: skip
    assert found["tls-cert"] == (str(cert), "env PIPELINE_EVENTS_SERVER_TLS_CERT")
    assert found["tls-key"] == (str(key), "env PIPELINE_EVENTS_SERVER_TLS_KEY")
    names = [option.env for option in config.options(cli.serve_parser())]
    assert len(set(names)) == len(names)
    assert not set(names) & (config.CLIENT_VARIABLES | {config.CONFIG_ENV})


def test_every_serve_flag_is_configurable_and_in_the_readme_table() -> None:
    serve_parser = cli.serve_parser()
    table = config.options(serve_parser)
    flags = {
        flag
        for action in serve_parser._actions
        for flag in action.option_strings
        if flag.startswith("--") and action.dest not in config.META | {"help"}
    }
    assert {option.flag for option in table} == flags
    readme = README.read_text()
    start, end = "<!-- serve-config-table: start -->\n", "<!-- serve-config-table: end -->"
    shown = readme[readme.index(start) + len(start) : readme.index(end)]
    assert shown == config.readme_table(table), (
        "README's configuration table is out of date: paste the output of\n"
        ".venv/bin/python -c 'from pipeline_events.service.config import *;"
        " from pipeline_events.cli import serve_parser;"
        ' print(readme_table(options(serve_parser())), end="")\''
    )
    for option in table:
        assert f"| `{option.flag}` | `{option.env}` | `{option.key}` |" in shown


@pytest.mark.parametrize(("flag", "module"), [("--metrics", "pipeline_events.service.metrics"),
                                              ("--web", "pipeline_events.web")])  # fmt: skip
def test_metrics_or_web_without_their_module_is_one_line(
    tmp_path: Path, flag: str, module: str
) -> None:
    program = (
        f"import sys; sys.modules[{module!r}] = None\n"  # as if it were not installed
        "from pipeline_events.cli import main\n"
        f"sys.exit(main(['serve', '--store', 'memory://', '--listen', '127.0.0.1:0', {flag!r},"
        " '127.0.0.1:0']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env=clean_env(PIPELINE_EVENTS_LOG_LEVEL="error"),
    )  # fmt: skip
    line = one_line_error(result)
    assert f"{flag} is unavailable" in line
