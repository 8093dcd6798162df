"""Where `serve` takes its settings from: flags, environment variables, a TOML file.

Every `serve` flag (`--max-event-bytes N`) can also be given as an environment
variable (`PIPELINE_EVENTS_MAX_EVENT_BYTES=N`) and as a key of the TOML file named
by `--config FILE` or `PIPELINE_EVENTS_CONFIG` (`max-event-bytes = N`, or
`max_event_bytes`). A flag wins over the environment, the environment over the
file, the file over the built-in default. `serve --print-config` shows the result.

The table of options is read from the `serve` parser itself (`options`), so a flag
added there is covered here, in `--print-config` and in the README's table (a test
checks it) without further work. Importable without the `[grpc]` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

ENV_PREFIX = "PIPELINE_EVENTS_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
#: Options that say where the configuration comes from (or what to do with it), not
#: what it is: flags only (and PIPELINE_EVENTS_CONFIG), never keys of the file.
META = frozenset({"config", "print_config"})
#: What the client commands read (tls.py, cli.py): never a setting of the server.
CLIENT_VARIABLES = frozenset(
    ENV_PREFIX + name for name in ("TOKEN", "TLS_CA", "TLS_CERT", "TLS_KEY")
)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
#: Query options of a store URL whose values are secrets (NATS: password, token).
_SECRET_QUERY = frozenset({"password", "token", "pass", "secret"})
REDACTED = "***"


class ConfigError(ValueError):
    """A setting that cannot be used: one line naming its source (exit status 2)."""


class Default:
    """A flag's built-in default, as the parser holds it: tells "not given" from "given".

    `str()` is the value's, so `%(default)s` in a flag's help still reads as before.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return f"Default({self.value!r})"


@dataclass(frozen=True, slots=True)
class Option:
    """One `serve` setting: its flag, its environment variable, its key in the file."""

    flag: str  # --max-event-bytes
    dest: str  # max_event_bytes (the attribute of the parsed arguments)
    default: Any  # the default after the flag's own type (None: unset)
    action: argparse.Action

    @property
    def key(self) -> str:
        """The key in the TOML file (`max_event_bytes` is accepted as well)."""
        return self.flag.removeprefix("--")

    @property
    def env(self) -> str:
        """The environment variable: PIPELINE_EVENTS_<FLAG>, unless a client uses that name
        (PIPELINE_EVENTS_TLS_CERT is a client's own certificate): PIPELINE_EVENTS_SERVER_<FLAG>.
        """
        name = self.key.upper().replace("-", "_")
        if ENV_PREFIX + name in CLIENT_VARIABLES:
            return f"{ENV_PREFIX}SERVER_{name}"
        return ENV_PREFIX + name

    @property
    def help(self) -> str:
        """The flag's help, its `%(default)s` filled in."""
        text = self.action.help or ""
        return text % {"default": self.default} if "%(" in text else text

    @property
    def is_bool(self) -> bool:
        """A switch (`store_true`): true/false, 1/0, yes/no from the environment or file."""
        return self.action.nargs == 0

    def parse(self, value: Any, source: str) -> Any:
        """A value from the environment (text) or the file (TOML), checked as the flag's.

        Raises:
            ConfigError: `SOURCE: expected ..., not ...`, in one line.
        """
        if self.is_bool:
            if isinstance(value, bool):
                parsed = value
            elif isinstance(value, int) and value in (0, 1):
                parsed = bool(value)
            elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                parsed = value.strip().lower() in _TRUE
            else:
                raise ConfigError(f"{source}: expected true or false (1/0, yes/no), not {value!r}")
            const = self.action.const
            return parsed if const is True else (not parsed if const is False else parsed)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{source}: expected a {self._what()}, not {value!r}")
        text = str(value)
        try:
            result: Any = self.action.type(text) if callable(self.action.type) else text
        except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
            raise ConfigError(f"{source}: {one_line(error) or f'invalid value {text!r}'}") from None
        choices = self.action.choices
        if choices is not None and result not in choices:
            allowed = ", ".join(map(str, choices))
            raise ConfigError(f"{source}: expected one of {allowed}, not {text!r}")
        return result

    def _what(self) -> str:
        return "string" if self.action.type is None else "number or string"


def one_line(error: BaseException) -> str:
    """An error's text on one line (the CLI prints it after the command's name)."""
    return " ".join(str(error).split())


def options(serve_parser: argparse.ArgumentParser) -> list[Option]:
    """Every setting of the `serve` parser, in the order of its `--help`."""
    found = []
    for action in serve_parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in META:
            continue
        long_flags = [flag for flag in action.option_strings if flag.startswith("--")]
        if not long_flags:
            raise TypeError(f"serve option {action.dest!r} needs a --long flag to be configurable")
        if action.nargs not in (None, 0) or isinstance(action, argparse._AppendAction):
            raise TypeError(f"serve option {long_flags[0]} takes one value: not supported here")
        default = action.default.value if isinstance(action.default, Default) else action.default
        if isinstance(default, str) and callable(action.type):
            default = action.type(default)  # as argparse converts a default given as text
        found.append(Option(long_flags[0], action.dest, default, action))
    return found


def mark_defaults(serve_parser: argparse.ArgumentParser) -> None:
    """Wrap every setting's default in `Default`, so `resolve` knows which flags were given."""
    for action in serve_parser._actions:
        if isinstance(action, argparse._HelpAction) or action.dest in META:
            continue
        if not isinstance(action.default, Default):
            action.default = Default(action.default)


@dataclass(frozen=True, slots=True)
class Setting:
    """One effective setting and where it came from."""

    option: Option
    value: Any
    source: str  # "flag", "env PIPELINE_EVENTS_X", "file F", "default"


@dataclass(frozen=True, slots=True)
class Resolved:
    """The effective configuration of `serve`."""

    settings: list[Setting]
    config_file: str | None
    config_source: str | None  # "flag" or "env PIPELINE_EVENTS_CONFIG"

    def value(self, dest: str) -> Any:
        for setting in self.settings:
            if setting.option.dest == dest:
                return setting.value
        raise KeyError(dest)

    def redacted(self) -> dict[str, Any]:
        """Key -> value as shown (secrets in URLs replaced by ***, paths as they are)."""
        return {s.option.key: shown(s.value) for s in self.settings}

    def sources(self) -> dict[str, str]:
        return {s.option.key: s.source for s in self.settings}

    def toml(self) -> str:
        """The configuration as a TOML file, each line saying where its value came from."""
        lines = [
            "# pipeline-events serve: the effective configuration (flag > env > file > default)"
        ]
        if self.config_file is not None:
            lines.append(f"# config file: {self.config_file} ({self.config_source})")
        for setting in self.settings:
            value = shown(setting.value)
            if value is None:
                lines.append(f"# {setting.option.key} is unset  # {setting.source}")
            else:
                lines.append(f"{setting.option.key} = {_toml_value(value)}  # {setting.source}")
        return "\n".join(lines) + "\n"

    def one_line(self) -> str:
        """`key=value (source), ...`: the startup log line's text."""
        return ", ".join(
            f"{s.option.key}={_text(shown(s.value))} ({s.source})"
            for s in self.settings
            if s.value is not None or s.source != "default"
        )


def resolve(
    args: argparse.Namespace,
    serve_options: Iterable[Option],
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """The effective settings: each from its flag, else its variable, else the file, else
    its default. `args` gets every value in place of the parser's `Default` markers.

    An empty environment variable counts as unset.

    Raises:
        ConfigError: an unknown key in the file, a file that cannot be read or parsed, a
            bad value from any source: one line that names the source.
    """
    environ = os.environ if environ is None else environ
    table = list(serve_options)
    config_file, config_source = getattr(args, "config", None), "flag"
    if config_file is None and environ.get(CONFIG_ENV):
        config_file, config_source = environ[CONFIG_ENV], f"env {CONFIG_ENV}"
    from_file = {} if config_file is None else read_file(config_file, table)
    settings = []
    for option in table:
        given = getattr(args, option.dest, Default(option.default))
        if not isinstance(given, Default):
            setting = Setting(option, given, "flag")
        elif environ.get(option.env, "") != "":
            source = f"env {option.env}"
            setting = Setting(option, option.parse(environ[option.env], source), source)
        elif option.dest in from_file:
            source = f"file {config_file}"
            raw = from_file[option.dest]
            setting = Setting(option, option.parse(raw, f"{source}: {option.key}"), source)
        else:
            setting = Setting(option, option.default, "default")
        setattr(args, option.dest, setting.value)
        settings.append(setting)
    return Resolved(settings, config_file, None if config_file is None else config_source)


def read_file(path: str, table: Iterable[Option]) -> dict[str, Any]:
    """dest -> raw TOML value of a config file; an unknown or repeated key is refused.

    Raises:
        ConfigError: the file cannot be read, is not TOML, or has a key no flag has.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path}: not valid TOML: {one_line(error)}") from None
    by_key: dict[str, Option] = {}
    for option in table:
        by_key[option.key] = option
        by_key[option.key.replace("-", "_")] = option
    found: dict[str, Any] = {}
    for key, value in data.items():
        found_option = by_key.get(key)
        if found_option is None:
            raise ConfigError(
                f"config file {path}: unknown key {key!r} (the keys are serve's flags without"
                " the --, e.g. max-event-bytes)"
            )
        if found_option.dest in found:
            raise ConfigError(f"config file {path}: {found_option.key!r} is given twice")
        found[found_option.dest] = value
    return found


# --- secrets ---------------------------------------------------------------------------------

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def shown(value: Any) -> Any:
    """A value as it may be printed or logged: passwords and tokens in URLs are ***.

    File paths (`--auth`, `--tls-key`) are not secrets: they are shown.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return redact_url(text) if _URL.match(text) else text


def redact_url(url: str) -> str:
    """`nats://user:***@host`, `nats://***@host` (a token), `?password=***&token=***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        hosts = []
        for host in netloc.split(","):  # nats://a:1,b:2 lists several servers
            userinfo, at, rest = host.rpartition("@")
            if at:
                user, colon, _ = userinfo.partition(":")
                host = f"{user}:{REDACTED}@{rest}" if colon else f"{REDACTED}@{rest}"
            hosts.append(host)
        netloc = ",".join(hosts)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_QUERY for key, _ in pairs):
            query = urlencode(
                [(k, REDACTED if k.lower() in _SECRET_QUERY else v) for k, v in pairs], safe="*/"
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    # Not urlunsplit: it rewrites sqlite:///x as sqlite:/x (schemes it does not know).
    text = f"{parts.scheme}://{netloc}{parts.path}"
    return text + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def readme_table(serve_options: Iterable[Option]) -> str:
    """The configuration table of the README (tests/service/test_serve_config.py checks it)."""
    lines = [
        "| flag | environment variable | TOML key | default | what |",
        "|---|---|---|---|---|",
    ]
    for option in serve_options:
        default = option.default
        if default is None:
            shown_default = "unset"
        else:
            value = str(default) if isinstance(default, tuple) else default  # ListenAddress
            shown_default = f"`{_toml_value(value)}`"
        what = option.help.replace("|", "\\|")
        lines.append(
            f"| `{option.flag}` | `{option.env}` | `{option.key}` | {shown_default} | {what} |"
        )
    return "\n".join(lines) + "\n"
