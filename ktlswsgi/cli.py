"""The command line: settings from their three sources -> one Config, logging
set-up (`logs.py`), then the server.

Owns: the command-line parser (made from `settings.SETTINGS`, plus the
actions that are not settings: -c, --version, --check-ktls, --print-config,
--check-config), merging the sources (command line > KTLSWSGI_* environment >
config file > defaults), and the exit codes: 0 after a clean shutdown, 1 for
a bad flag or value, a setting, bind, certificate or app-loading error (one
line on stderr; a traceback only with --log-level debug).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__, settings
from .config import Config, ConfigError
from .logs import setup_logging
from .settings import BY_NAME, SETTINGS, SettingError

log = logging.getLogger("ktlswsgi")

_SECTION_TITLES = {"app": "the app", "sockets": "sockets",
                   "processes": "processes (gunicorn's names)", "threads": "threads",
                   "timeouts": "timeouts (seconds)", "limits": "limits (sizes: 64k, 100m)",
                   "tls": "TLS and HTTP/2", "proxies": "proxies (gunicorn's names)",
                   "files": "files the server sends itself (--static, X-Sendfile)",
                   "logging": "metrics and logging"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit status 1 (the README's
    "bad input exits 1"), instead of the whole usage and status 2."""

    def error(self, message: str):
        unknown = "unrecognized arguments: "
        if message.startswith(unknown):
            words = message[len(unknown):]
            message = ("unrecognized argument " if len(words.split()) == 1
                       else "unrecognized arguments ") + words
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _arg_type(setting):
    def convert(text):
        try:
            return setting.parse(text, setting.long_flag)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None
    convert.__name__ = setting.kind
    return convert


class _HelpEscaped:
    """A setting whose help text is safe for argparse's %-formatting."""

    def __init__(self, setting):
        self._s = setting
        self.help = setting.help.replace("%", "%%")

    def __getattr__(self, name):
        return getattr(self._s, name)


def build_parser() -> argparse.ArgumentParser:
    """Every setting's flags; a flag not given stays out of the namespace, so
    the other sources can fill it."""
    p = ArgumentParser(
        prog="ktlswsgi", argument_default=argparse.SUPPRESS,
        description="A WSGI server whose TLS can run in the Linux kernel (kTLS). Every "
                    "setting is also a config-file key (-c) and a KTLSWSGI_* environment "
                    "variable: see docs/settings.md.")
    p.add_argument("--version", action="version", version=f"ktlswsgi {__version__}")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="a Python file of settings named as the long flags (workers = 4; "
                        "gunicorn's names too); the environment and the flags override it; "
                        "re-read on HUP")
    p.add_argument("--check-ktls", action="store_true",
                   help="probe kTLS on this host, run a loopback self-test, exit 0/1")
    p.add_argument("--print-config", action="store_true",
                   help="print the settings in effect as a config file, then exit")
    p.add_argument("--check-config", action="store_true",
                   help="check the settings and import the app, then exit 0/1 without serving")
    groups = {section: p.add_argument_group(_SECTION_TITLES[section])
              for section in settings.SECTIONS}
    for s in SETTINGS:
        g = groups[s.section]
        default = f" (default {s.default!r})" if s.default not in (None, [], False) else ""
        default = default.replace("%", "%%")
        s = _HelpEscaped(s)
        if s.positional:
            g.add_argument(s.name, nargs="?", metavar=s.metavar, help=s.help)
        elif s.kind == "bool" and s.negatable:
            g.add_argument(*s.flags, s.long_flag, dest=s.name,
                           action=argparse.BooleanOptionalAction, help=s.help + default)
        elif s.kind == "bool":
            g.add_argument(*s.flags, s.long_flag, dest=s.name, action="store_true",
                           help=s.help)
        elif s.kind == "list":
            g.add_argument(*s.flags, s.long_flag, dest=s.name, action="append",
                           metavar=s.metavar or s.name.upper(), help=s.help + default)
        else:
            metavar = s.metavar or ("{" + ",".join(s.choices) + "}" if s.choices else None)
            g.add_argument(*s.flags, s.long_flag, dest=s.name, type=_arg_type(BY_NAME[s.name]),
                           metavar=metavar, help=s.help + default)
    return p


def gather(argv=None, environ=None):
    """(the parsed command line, {setting name: value} from every source)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    values = settings.defaults()
    environ = os.environ if environ is None else environ
    config_file = getattr(args, "config", None) or environ.get(settings.ENV_PREFIX + "CONFIG")
    try:
        conventions, own = settings.from_environment(environ)
        values.update(conventions)
        if config_file:
            values.update(settings.from_config_file(config_file))
        values.update(own)
    except SettingError as exc:
        raise ConfigError(str(exc)) from None
    for s in SETTINGS:
        if s.name in vars(args):
            value = getattr(args, s.name)
            if s.positional and value is None:
                continue
            values[s.name] = value
    return args, values


def config_from_values(values: dict) -> Config:
    by_field = {settings.BY_NAME[name].field: value for name, value in values.items()}
    try:
        return Config(**by_field).validate()
    except SettingError as exc:
        raise ConfigError(str(exc)) from None


def parse(argv=None):
    """(args, Config) from the command line, the environment and the config file."""
    args, values = gather(argv)
    return args, config_from_values(values)


def main(argv=None) -> int:
    try:
        args, values = gather(argv)
        if getattr(args, "print_config", False):
            print(settings.render_config(values), end="")
            return 0
        cfg = config_from_values(values)
    except ConfigError as exc:
        print(f"ktlswsgi: error: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "check_config", False):
        return _check_config(cfg)
    # The master: no writer thread before fork (each worker starts its own).
    listener = setup_logging(cfg, start_writer=False)
    try:
        if getattr(args, "check_ktls", False):
            from .tls.selftest import run_check
            return run_check()
        if not cfg.app:
            print("ktlswsgi: error: the APP argument is required (see ktlswsgi --help)",
                  file=sys.stderr)
            return 1
        return _serve(cfg, argv)
    finally:
        if listener:
            listener.stop()


def _check_config(cfg: Config) -> int:
    """--check-config: the settings are valid (they are, to get here), the
    TLS certificate loads, and the app imports; 0, or 1 with one line."""
    from .app import AppLoadError, load_app
    if not cfg.app:
        print("ktlswsgi: error: the APP argument is required (see ktlswsgi --help)",
              file=sys.stderr)
        return 1
    if cfg.chdir:
        os.chdir(cfg.chdir)
    if cfg.tls:
        from .tls import TLSSetupError, tls_transport_factory
        try:
            tls_transport_factory(cfg)
        except TLSSetupError as exc:
            print(f"ktlswsgi: error: {exc}", file=sys.stderr)
            return 1
    try:
        load_app(cfg.app)
    except AppLoadError as exc:
        print(f"ktlswsgi: error: {exc}", file=sys.stderr)
        return 1
    print(f"ktlswsgi: configuration OK (app {cfg.app}, {cfg.workers} worker"
          f"{'' if cfg.workers == 1 else 's'}, {cfg.threads} threads each, "
          f"{', '.join(map(str, cfg.binds))})")
    return 0


def _serve(cfg: Config, argv) -> int:
    from .arbiter import Arbiter
    if cfg.chdir:
        os.chdir(cfg.chdir)
    if cfg.reload:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            log.error("--reload needs watchfiles: pip install 'ktlswsgi[reload]'")
            return 1

    def reload_config() -> Config:
        return parse(argv)[1]

    return Arbiter(cfg, reload_config, argv=argv).run()
