"""One Config object: every setting of settings.py, as attributes with units.

Owns: `Config` (made from `settings.SETTINGS`: one attribute per setting),
the checks between settings, and what settings imply (parsed binds, the
user's ids, the key's password, the forwarded-trust lists).  `cli.py` fills
it from the command line, the config file and the environment; every other
module reads it and none re-parses flags or the environment.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import field

from . import http1, reactor
from .settings import SETTINGS, SettingError
from .sockets import Bind, BindError  # noqa: F401 (Bind: part of config's interface)


class ConfigError(ValueError):
    """A setting is invalid; the message is one line for the operator."""


class _ConfigBase:
    """The methods of `Config`; its fields are the settings (settings.py)."""

    def __post_init__(self):
        try:
            self.binds = [Bind.parse(b) for b in self.bind]
        except BindError as exc:
            raise ConfigError(str(exc)) from None
        if self.certfile:
            self.tls = True   # --certfile implies --tls
        self.user_name, self.uid, self.gid = _user_and_group(self.user, self.group)
        self._proxy_trust = None

    @property
    def low_water_bytes(self) -> int:
        """A producer over --high-water waits until the queue is below this."""
        return max(1, self.high_water_bytes // 4)

    def proxy_trust(self) -> tuple:
        """(forwarded trust, PROXY trust) as `forwarded.TrustedProxies`, parsed once.

        validate() calls it, so a bad entry is a ConfigError at start; a Config
        made by replace() (which resets the cache) parses again on first use.
        """
        trust = self._proxy_trust
        if trust is None:
            from .forwarded import TrustedProxies
            try:
                forwarded = TrustedProxies(self.forwarded_allow_ips, source=self.forwarded_header)
            except ValueError as exc:
                raise ConfigError(f"--{exc}") from None
            try:
                proxy = TrustedProxies(self.proxy_allow_from)
            except ValueError as exc:  # its messages name the forwarded setting
                raise ConfigError("--proxy-allow-from" + str(exc).removeprefix(
                    "forwarded-allow-ips")) from None
            trust = self._proxy_trust = (forwarded, proxy)
        return trust

    def _validate_proxies(self) -> None:
        from .proxyproto import MIN_MAX_BYTES, V2_FIXED_BYTES
        if not MIN_MAX_BYTES <= self.proxy_header_max_bytes <= V2_FIXED_BYTES + 0xFFFF:
            raise ConfigError(f"--proxy-header-max-bytes must be "
                              f"{MIN_MAX_BYTES}..{V2_FIXED_BYTES + 0xFFFF}")
        self._proxy_trust = None
        self.proxy_trust()

    def _validate_logs(self) -> None:
        from .accesslog import compile_format
        try:
            compile_format(self.access_logformat, hide=self.access_log_hide_header)
        except ValueError as exc:
            raise ConfigError(f"--access-logformat: {exc}") from None
        for flag, name in (("--error-logfile", "error_logfile"),
                           ("--access-logfile", "access_logfile")):
            path = getattr(self, name)
            if not path or path == "-":
                continue
            # Absolute, against the start directory (as gunicorn): the master
            # opens its log before --chdir, the workers after it.
            path = os.path.abspath(path)
            # Checked, not created: with --user the workers open it after
            # dropping privileges, and a file made here would be the master's.
            parent = os.path.dirname(path)
            if os.path.isdir(path):
                raise ConfigError(f"{flag} {path!r}: is a directory")
            if not os.path.isdir(parent):
                raise ConfigError(f"{flag} {path!r}: no such directory {parent!r}")
            if not os.access(path if os.path.exists(path) else parent, os.W_OK):
                raise ConfigError(f"{flag} {path!r}: not writable")
            setattr(self, name, path)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Config":
        """Check every setting (its own bounds, then the rules between
        settings) and fill in what they imply (the user's ids, the key's
        password); ConfigError names the setting."""
        for s in SETTINGS:
            try:
                s.check(getattr(self, s.field), s.long_flag)
            except SettingError as exc:
                raise ConfigError(str(exc)) from None
        if not 0 <= self.body_prebuffer_bytes <= self.body_buffer_bytes:
            raise ConfigError("--body-prebuffer must be between 0 and --body-buffer")
        try:
            http1.parser_name(self.http)
            reactor.loop_name(self.loop)
        except ValueError as exc:   # a parser or loop that is not installed or not built
            raise ConfigError(str(exc)) from None
        if self.keyfile and not self.certfile:
            raise ConfigError("--keyfile needs --certfile")
        if self.keyfile_password_file is not None and not self.certfile:
            raise ConfigError("--keyfile-password-file needs --certfile")
        if self.reload and self.preload:
            raise ConfigError("--reload needs the app imported in each worker: drop --preload")
        if self.chdir and not os.path.isdir(self.chdir):
            raise ConfigError(f"--chdir {self.chdir!r}: not a directory")
        if self.keyfile_password is None:
            self.keyfile_password = _read_password(self.keyfile_password_file)
        self._validate_proxies()
        self._validate_logs()
        self._validate_files()
        return self

    def _validate_files(self) -> None:
        for entry in self.static:
            prefix, eq, directory = entry.partition("=")
            if not eq or not prefix.startswith("/"):
                raise ConfigError(f"--static {entry!r}: give URL_PREFIX=DIR, the prefix "
                                  "starting with /")
            if not os.path.isdir(directory):
                raise ConfigError(f"--static {entry!r}: {directory!r} is not a directory")
        for entry in self.sendfile_root:
            prefix, eq, directory = entry.partition("=")
            if eq and not prefix.startswith("/"):
                raise ConfigError(f"--sendfile-root {entry!r}: an X-Accel-Redirect prefix "
                                  "starts with /")
            if not os.path.isdir(directory if eq else entry):
                raise ConfigError(f"--sendfile-root {entry!r}: not a directory")


def _config_fields() -> list:
    fields = []
    for s in SETTINGS:
        default = s.default
        if isinstance(default, list):
            fields.append((s.field, object, field(default_factory=lambda d=default: list(d))))
        else:
            fields.append((s.field, object, field(default=default)))
    # What the settings imply, filled in by __post_init__ / validate().
    fields += [("binds", list, field(default=None, init=False, repr=False, compare=False)),
               ("keyfile_password", object, field(default=None, repr=False, compare=False)),
               ("user_name", object, field(default=None, init=False, compare=False)),
               ("uid", object, field(default=None, init=False, compare=False)),
               ("gid", object, field(default=None, init=False, compare=False)),
               ("_proxy_trust", object, field(default=None, init=False, repr=False,
                                              compare=False))]
    return fields


Config = dataclasses.make_dataclass("Config", _config_fields(), bases=(_ConfigBase,))
Config.__module__ = __name__
Config.__doc__ = """Every setting (settings.SETTINGS) as an attribute named with its unit
(`keep_alive_s`, `max_body_bytes`), plus what they imply: `binds` (the
parsed --bind), `user_name`/`uid`/`gid` (from --user/--group),
`keyfile_password` (read from --keyfile-password-file by validate()) and
`low_water_bytes`.  (--user, --group: looked up at construction.)  `Config(**fields).validate()` checks them all."""


def _read_password(path: str | None) -> str | None:
    """The first line of `path`, without its line ending (as nginx's ssl_password_file)."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    except OSError as exc:
        raise ConfigError(f"--keyfile-password-file {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--keyfile-password-file {path!r}: not UTF-8 text") from None
    password = line.rstrip("\r\n")
    if not password:
        raise ConfigError(f"--keyfile-password-file {path!r}: the first line is empty")
    return password


def _user_and_group(user, group):
    """(user name, uid, gid) for --user / --group (names or numbers)."""
    import grp
    import pwd
    name = uid = gid = None
    if user is not None:
        try:
            entry = pwd.getpwuid(int(user)) if str(user).isdigit() else pwd.getpwnam(str(user))
        except KeyError:
            raise ConfigError(f"--user {user!r}: no such user") from None
        name, uid, gid = entry.pw_name, entry.pw_uid, entry.pw_gid
    if group is not None:
        try:
            gid = (grp.getgrgid(int(group)).gr_gid if str(group).isdigit()
                   else grp.getgrnam(str(group)).gr_gid)
        except KeyError:
            raise ConfigError(f"--group {group!r}: no such group") from None
    return name, uid, gid
