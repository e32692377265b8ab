"""Every setting, declared once: the one table the command line, the config
file (-c), the environment, `Config` and docs/settings.md are made from.

Owns: each setting's name, flags, type, unit, default, bounds, help, and the
names gunicorn gives it; reading values from the three sources (a Python
config file, KTLSWSGI_* environment variables, the command line) and their
precedence (command line > environment > config file > default); rendering
docs/settings.md.  gunicorn's settings.py `Setting` classes are the model.

One vocabulary: a setting's `name` is its long flag in snake case
(`--keep-alive` -> keep_alive), its config-file key and its environment
variable (KTLSWSGI_KEEP_ALIVE); the `Config` attribute adds the unit
(`keep_alive_s`, `max_body_bytes`).  `python -m ktlswsgi.settings` prints
docs/settings.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

ENV_PREFIX = "KTLSWSGI_"


class SettingError(ValueError):
    """A value a setting cannot take; one line naming the setting."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    help: str
    section: str
    kind: str = "str"          # str | int | float | size | octal | bool | list | choice
    unit: str = ""             # s | bytes | bytes/s | "" (a count, a name, a path)
    flags: tuple = ()          # other flags (short forms, gunicorn's spellings)
    choices: tuple = ()
    minimum: float | None = None   # inclusive
    positive: bool = False     # > 0
    aliases: tuple = ()        # other config-file keys (gunicorn's)
    env_aliases: tuple = ()    # other environment variables, lowest precedence first
    negatable: bool = False    # a bool with --no-NAME too
    metavar: str | None = None
    flag: str | None = None    # the long flag, when it is not --name-with-dashes
    positional: bool = False   # the command line gives it without a flag

    @property
    def field(self) -> str:
        """The `Config` attribute: the name plus its unit."""
        suffix = {"s": "_s", "bytes": "_bytes"}.get(self.unit, "")
        return self.name if self.name.endswith(suffix) else self.name + suffix

    @property
    def long_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def parse(self, text: str, source: str):
        """A value from a string (the command line, the environment)."""
        k = self.kind
        try:
            if k == "int":
                value = int(text)
            elif k == "float":
                value = float(text)
            elif k == "size":
                value = parse_size(text)
            elif k == "octal":
                value = int(text, 8)
            elif k == "bool":
                low = text.strip().lower()
                if low not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError
                value = low in ("1", "true", "yes", "on")
            elif k == "list":
                value = [part.strip() for part in text.split(",") if part.strip()]
            else:
                value = text
        except ValueError:
            raise SettingError(f"{source}: {text!r} is not {_KIND_TEXT[k]}") from None
        return self.check(value, source)

    def coerce(self, value, source: str):
        """A value from a config file: the Python type, or a string (None
        where None is the default: "not set")."""
        if value is None and self.default is None:
            return None
        if isinstance(value, str) and self.kind not in ("str", "choice"):
            return self.parse(value, source)
        k = self.kind
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "octal": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "size": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "bool": lambda v: isinstance(v, bool),
              "list": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v),
              "str": lambda v: isinstance(v, str) or v is None,
              "choice": lambda v: isinstance(v, str)}[k]
        if not ok(value):
            raise SettingError(f"{source}: {type(value).__name__} {value!r} is not "
                               f"{_KIND_TEXT[k]}")
        if k == "float":
            value = float(value)
        elif k == "list":
            value = list(value)
        return self.check(value, source)

    def check(self, value, source: str):
        if self.choices and value not in self.choices:
            raise SettingError(f"{source}: {value!r}: use {', '.join(self.choices)}")
        if value is None:
            return value
        if self.positive and value <= 0:
            raise SettingError(f"{source}: {value!r}: must be > 0")
        if self.minimum is not None and value < self.minimum:
            raise SettingError(f"{source}: {value!r}: must be >= {self.minimum:g}")
        return value

    def sources(self) -> str:
        """Where a value comes from, for the docs."""
        keys = ", ".join(f"`{k}`" for k in (self.name, *self.aliases))
        envs = ", ".join(f"`{e}`" for e in (self.env, *self.env_aliases))
        return keys, envs


_KIND_TEXT = {"int": "a whole number", "octal": "an octal number (027)", "float": "a number", "size": "a size (64k, 100m)",
              "bool": "true or false", "list": "a list", "str": "text",
              "choice": "one of the choices"}


def parse_size(text: str) -> int:
    """Bytes from 1048576, 64k, 100m, 1g (KiB, MiB, GiB: powers of 1024)."""
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    t = str(text).strip().lower().removesuffix("ib").removesuffix("b")
    mult = 1
    if t and t[-1] in units:
        mult, t = units[t[-1]], t[:-1]
    return int(float(t) * mult)


S = Setting
SETTINGS: tuple = (
    # -- the app -----------------------------------------------------------------------
    S("app", "", "the WSGI app: `module:callable` or `module:factory()`", "app",
      positional=True, aliases=("wsgi_app",), metavar="APP"),
    S("chdir", None, "change to this directory before loading the app", "app", metavar="DIR"),
    # -- sockets -------------------------------------------------------------------------
    S("bind", ["127.0.0.1:8000"], "HOST:PORT, [IPv6]:PORT or unix:PATH; repeatable", "sockets",
      kind="list", flags=("-b",), metavar="ADDRESS"),
    S("backlog", 2048, "listen() backlog", "sockets", kind="int", minimum=1),
    S("max_connections", 1000, "open connections per worker; at the limit an unfinished "
      "handshake is shed, else accept pauses", "sockets", kind="int", minimum=1),
    S("max_handshakes", 256, "concurrent TLS handshakes (and PROXY headers) per worker; at the "
      "limit the oldest of the busiest address is shed, else accept pauses", "sockets",
      kind="int", minimum=1),
    S("reuse_port", False, "each worker process gets its own SO_REUSEPORT socket (default: one "
      "shared)", "sockets", kind="bool"),
    # -- processes -------------------------------------------------------------------------
    S("workers", 1, "worker processes", "processes", kind="int", minimum=1, flags=("-w",),
      env_aliases=("WEB_CONCURRENCY",)),
    S("timeout", 30.0, "a worker whose reactor is silent this long is killed and replaced; "
      "0: never", "processes", kind="float", unit="s", minimum=0, flags=("-t",)),
    S("max_requests", 0, "a worker retires gracefully after this many requests; 0: never",
      "processes", kind="int", minimum=0),
    S("max_requests_jitter", 0, "add a random 0..N to --max-requests per worker", "processes",
      kind="int", minimum=0),
    S("preload", False, "import the app in the master before forking the workers", "processes",
      kind="bool", aliases=("preload_app",)),
    S("pid", None, "write the master's PID to FILE", "processes", flags=("-p",),
      aliases=("pidfile",), metavar="FILE"),
    S("user", None, "workers switch to this user (name or uid) after binding", "processes",
      flags=("-u",)),
    S("group", None, "workers switch to this group (name or gid) after binding", "processes",
      flags=("-g",)),
    S("umask", None, "umask of the master (octal, e.g. 027)", "processes", kind="octal",
      flags=("-m",)),
    S("reload", False, "restart the workers when a .py file under the current directory "
      "changes (development; needs the 'reload' extra: watchfiles)", "processes", kind="bool"),
    # -- threads ---------------------------------------------------------------------------
    S("threads", 16, "worker pool threads per process", "threads", kind="int", minimum=1),
    S("loop", "auto", "the reactor thread's event loop: c (ours, in the compiled extension) "
      "or python (the reference); auto: c when built", "threads", kind="choice",
      choices=("auto", "c", "python")),
    S("queue_size", 256, "requests waiting for a worker thread; beyond this: 503", "threads",
      kind="int", minimum=1),
    # -- timeouts --------------------------------------------------------------------------
    S("keep_alive", 5.0, "idle keep-alive between requests", "timeouts", kind="float", unit="s",
      positive=True, aliases=("keepalive",)),
    S("header_timeout", 10.0, "first byte to end of the request head (slowloris) -> 408",
      "timeouts", kind="float", unit="s", positive=True),
    S("read_timeout", 30.0, "request body stall -> 408", "timeouts", kind="float", unit="s",
      positive=True),
    S("write_timeout", 30.0, "the client reads nothing while output waits -> close; an HTTP/2 "
      "stream that gets less than 16 KiB of window -> RST_STREAM", "timeouts", kind="float",
      unit="s", positive=True),
    S("graceful_timeout", 30.0, "in-flight requests may finish this long on shutdown",
      "timeouts", kind="float", unit="s", positive=True),
    S("handshake_timeout", 10.0, "TLS handshake", "timeouts", kind="float", unit="s",
      positive=True),
    S("linger", 2.0, "after the response: unread request body drained, or a closing "
      "connection's last bytes, this long", "timeouts", kind="float", unit="s", minimum=0),
    # -- limits ----------------------------------------------------------------------------
    S("limit_request_line", 4094, "request line bytes -> 414", "limits", kind="int", minimum=1),
    S("limit_request_field_size", 8190, "one header field's bytes -> 431", "limits", kind="int",
      minimum=1, flag="--limit-request-field_size", flags=("--limit-request-field-size",)),
    S("limit_request_fields", 100, "header field count -> 431", "limits", kind="int", minimum=1),
    S("limit_request_headers_bytes", 64 * 1024, "the whole request head -> 431", "limits",
      kind="size", unit="bytes", minimum=1),
    S("http", "auto", "HTTP/1 request parser: c (ours) or httptools (llhttp) parses request "
      "heads without a body, h11 everything else; h11: h11 alone; auto: c when built, else "
      "httptools", "limits", kind="choice", choices=("auto", "c", "httptools", "h11")),
    S("max_body", 100 * 1024 * 1024, "request body -> 413", "limits", kind="size",
      unit="bytes", minimum=0),
    S("body_buffer", 256 * 1024, "request body read ahead of the app (HTTP/2: per stream; the "
      "connection's window is 4x)", "limits", kind="size", unit="bytes", minimum=1),
    S("body_prebuffer", 64 * 1024, "a request body up to this size arrives completely before "
      "the app runs (a slow sender holds no worker thread); a larger one starts the app once "
      "this much is in", "limits", kind="size", unit="bytes", minimum=0),
    S("body_min_rate", 500, "request body bytes per second a client must keep up, over the "
      "whole body, after a grace of --read-timeout; slower -> 408 (Apache's MinRate; 0: "
      "only the stall timeout)", "limits", kind="size", unit="bytes/s", minimum=0),
    S("pipeline_buffer", 64 * 1024, "pipelined bytes held while a request runs; reading "
      "pauses above", "limits", kind="size", unit="bytes", minimum=1),
    S("linger_bytes", 64 * 1024, "unread request body drained after an early response; "
      "beyond: close", "limits", kind="size", unit="bytes", minimum=0),
    S("high_water", 1024 * 1024, "outbound bytes per response before the app's worker waits "
      "(it resumes below a quarter of it)", "limits", kind="size", unit="bytes", minimum=4),
    S("recv_bytes", 64 * 1024, "bytes read from a socket at a time", "limits", kind="size",
      unit="bytes", minimum=1024),
    # -- TLS -------------------------------------------------------------------------------
    S("tls", False, "serve HTTPS (a self-signed development certificate if no --certfile)",
      "tls", kind="bool"),
    S("certfile", None, "PEM certificate chain (implies --tls)", "tls", metavar="FILE"),
    S("keyfile", None, "PEM private key (default: in --certfile)", "tls", metavar="FILE"),
    S("keyfile_password_file", None, "a file whose first line is the password of an encrypted "
      "key (a file keeps it out of ps and shell history)", "tls", metavar="FILE"),
    S("ciphers", None, "TLS 1.2 cipher list (OpenSSL syntax)", "tls"),
    S("tls13_ciphersuites", None, "TLS 1.3 suites (OpenSSL syntax)", "tls"),
    S("tls_min_version", "1.2", "the lowest TLS version offered", "tls", kind="choice",
      choices=("1.2", "1.3")),
    S("tls_transport", "auto", "socket: OpenSSL on the fd, kTLS when the kernel allows; memory: "
      "a BIO pair, userspace; auto: socket where kTLS can engage, else memory", "tls",
      kind="choice", choices=("auto", "socket", "memory")),
    S("ktls", True, "SSL_OP_ENABLE_KTLS on the TLS context (--no-ktls: never)", "tls",
      kind="bool", negatable=True),
    S("http2", True, "offer HTTP/2 (ALPN h2) on TLS connections", "tls", kind="bool",
      negatable=True),
    S("h2_max_concurrent_streams", 100, "HTTP/2 streams one connection may have open "
      "(SETTINGS_MAX_CONCURRENT_STREAMS)", "tls", kind="int", minimum=1),
    S("h2_max_active_streams", 32, "HTTP/2 streams of one connection in the app or sending "
      "their response at once (each may hold a worker and an open file); the others wait",
      "tls", kind="int", minimum=1),
    S("h2_max_reset_streams", 200, "HTTP/2 streams a client may reset while the server still "
      "owes them a response, plus the resets for its stream errors and refused streams, per "
      "10 s, before GOAWAY ENHANCE_YOUR_CALM (Rapid Reset, MadeYouReset)", "tls", kind="int",
      minimum=1),
    S("h2_max_control_frames", 1000, "PING, SETTINGS, PRIORITY, empty DATA, unknown, surplus "
      "or tiny WINDOW_UPDATE frames and DATA on closed streams a client may send per 10 s "
      "before GOAWAY ENHANCE_YOUR_CALM", "tls", kind="int", minimum=1),
    # -- proxies -----------------------------------------------------------------------------
    S("forwarded_allow_ips", "127.0.0.1,::1", "direct peers (addresses, CIDR networks, '*') "
      "whose X-Forwarded-For/-Proto (or Forwarded) set REMOTE_ADDR and the URL scheme",
      "proxies", env_aliases=("FORWARDED_ALLOW_IPS",), metavar="IPS"),
    S("forwarded_header", "x-forwarded", "the one header family read from those peers: "
      "X-Forwarded-* or RFC 7239 Forwarded", "proxies", kind="choice",
      choices=("x-forwarded", "forwarded")),
    S("proxy_protocol", False, "every connection starts with a PROXY protocol v1/v2 header "
      "(HAProxy send-proxy, AWS NLB), read before TLS; connections without one are closed",
      "proxies", kind="bool"),
    S("proxy_allow_from", "127.0.0.1,::1", "direct peers allowed to send the PROXY header; "
      "'*': any", "proxies", aliases=("proxy_allow_ips",), metavar="IPS"),
    S("proxy_header_timeout", 10.0, "accept to the end of the PROXY header", "proxies",
      kind="float", unit="s", positive=True),
    S("proxy_header_max_bytes", 16 + 1024, "a longer PROXY header closes the connection",
      "proxies", kind="int", unit="bytes"),
    # -- files -------------------------------------------------------------------------------
    S("static", [], "serve DIR's files under the URL PREFIX before the app (GET/HEAD, Range, "
      "ETag and 304, .br/.zst/.gz sidecars by Accept-Encoding; no dotfiles, no listing); a "
      "request no file matches goes to the app; repeatable", "files", kind="list",
      metavar="PREFIX=DIR"),
    S("static_max_age", 60, "Cache-Control max-age of --static files whose names carry no "
      "content hash (hashed names such as app.3f2a9c1d.js: a year, immutable)", "files",
      kind="int", unit="s", minimum=0),
    S("sendfile_root", [], "the app may answer with `X-Sendfile: PATH` beneath DIR, or "
      "`X-Accel-Redirect: PREFIX/...` mapped to DIR; the server then sends that file itself "
      "(Range, ETag and 304) and drops the header (default: off, the headers pass through); "
      "repeatable", "files", kind="list", metavar="DIR|PREFIX=DIR"),
    # -- metrics and logs ----------------------------------------------------------------
    S("metrics_bind", None, "serve Prometheus metrics (GET /metrics), summed over all workers, "
      "from a small process of the master (needs the 'metrics' extra)", "logging",
      metavar="HOST:PORT"),
    S("access_logfile", None, "access log file, '-' for stderr (default: none)", "logging",
      aliases=("accesslog",), metavar="FILE"),
    S("access_logformat", None, "the access log line in gunicorn's atoms (%(h)s %(t)s "
      "\"%(r)s\" %(s)s %(b)s %(D)s %({X-Request-Id}i)s ...) plus %(tls)s %(ktls)s "
      "%(aborted)s; 'json': one JSON object per line (default: the combined format, %(L)s, "
      "tls=... ktls=... and 'aborted')", "logging", aliases=("access_log_format",),
      metavar="FORMAT"),
    S("access_log_hide_header", [], "a header whose value the access log never writes, besides "
      "Authorization, Proxy-Authorization, Cookie and Set-Cookie; repeatable", "logging",
      kind="list", metavar="NAME"),
    S("error_logfile", "-", "error log file, '-' for stderr; reopened on USR1 and HUP",
      "logging", flags=("--log-file",), aliases=("errorlog",), metavar="FILE"),
    S("log_level", "info", "the error log's lowest level", "logging", kind="choice",
      choices=("debug", "info", "warning", "error", "critical"), aliases=("loglevel",)),
)
del S

BY_NAME = {s.name: s for s in SETTINGS}
SECTIONS = ("app", "sockets", "processes", "threads", "timeouts", "limits", "tls", "proxies",
            "files", "logging")
_FILE_KEYS = {key: s for s in SETTINGS for key in (s.name, *s.aliases)}
# gunicorn settings that are server hooks or features this server does not
# run: a config file naming one is an error, not a silent no-op.
_NOT_RUN = frozenset((
    "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
    "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
    "worker_exit", "nworkers_changed", "on_exit", "ssl_context", "worker_class",
    "worker_connections", "post_fork", "logger_class", "logconfig", "logconfig_dict",
    "statsd_host", "paste", "raw_env", "daemon", "sendfile", "reuse_port_workers",
))


def defaults() -> dict:
    """{name: default} (lists copied)."""
    return {s.name: (list(s.default) if isinstance(s.default, list) else s.default)
            for s in SETTINGS}


def from_config_file(path: str) -> dict:
    """{name: value} of a Python config file; SettingError names what is wrong:
    an unknown setting, a value of the wrong type, or a callable (a server
    hook this server would not run)."""
    import runpy
    try:
        namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise SettingError(f"--config {path!r}: no such file") from None
    except Exception as exc:
        raise SettingError(f"--config {path!r}: {type(exc).__name__}: {exc}") from None
    values = {}
    for key, value in namespace.items():
        if key.startswith("_") or type(value).__name__ == "module":
            continue
        setting = _FILE_KEYS.get(key)
        if callable(value) and not isinstance(value, type):
            what = ("a server hook ktlswsgi does not run" if key in _NOT_RUN or setting is None
                    else "a callable, not a value")
            raise SettingError(f"--config {path!r}: {key!r} is {what}")
        if setting is None:
            if isinstance(value, type):
                continue   # a class defined or imported there, not a setting
            hint = " (a gunicorn setting ktlswsgi does not have)" if key in _NOT_RUN else ""
            raise SettingError(f"--config {path!r}: unknown setting {key!r}{hint}")
        if setting.kind == "list" and isinstance(value, str):
            value = [value]
        values[setting.name] = setting.coerce(value, f"--config {path!r}: {key}")
    return values


def from_environment(environ=None) -> tuple:
    """({name: value} of the conventions' variables, {name: value} of the
    KTLSWSGI_* ones).  The first are defaults, as in gunicorn (WEB_CONCURRENCY
    for the workers, FORWARDED_ALLOW_IPS): below the config file; the second
    override the config file.  A KTLSWSGI_ variable one letter away from a
    setting's (a typo) is an error that names the setting."""
    import difflib
    environ = os.environ if environ is None else environ
    conventions, own = {}, {}
    for s in SETTINGS:
        for var in reversed(s.env_aliases):
            if environ.get(var, "") != "":
                conventions[s.name] = s.parse(environ[var], var)
        if environ.get(s.env, "") != "":
            own[s.name] = s.parse(environ[s.env], s.env)
    known = [s.env for s in SETTINGS] + [ENV_PREFIX + "CONFIG"]
    for var in environ:
        if var.startswith(ENV_PREFIX) and var not in known:
            close = difflib.get_close_matches(var, known, n=1, cutoff=0.9)
            if close:
                raise SettingError(f"environment: unknown setting {var} (did you mean "
                                   f"{close[0]}?)")
    return conventions, own


def render_config(values: dict) -> str:
    """`values` as a config file (the --print-config output): every setting."""
    lines = ["# ktlswsgi settings (python -m ktlswsgi --print-config)"]
    for section in SECTIONS:
        lines.append(f"\n# -- {section}")
        for s in SETTINGS:
            if s.section == section:
                lines.append(f"{s.name} = {values[s.name]!r}")
    return "\n".join(lines) + "\n"


def markdown() -> str:
    """docs/settings.md."""
    out = ["# Settings",
           "",
           "Generated from `ktlswsgi/settings.py` (`python -m ktlswsgi.settings > "
           "docs/settings.md`); a test keeps this page and the code in step.",
           "",
           "Every setting can be given as a command-line flag, as a key in a Python config "
           "file (`-c FILE`, `workers = 4`, gunicorn's names accepted), or as an environment "
           "variable (`KTLSWSGI_WORKERS=4`). The command line wins over the environment, "
           "which wins over the config file; `WEB_CONCURRENCY` (workers) and "
           "`FORWARDED_ALLOW_IPS`, as in gunicorn, only change the defaults. A config "
           "file naming an unknown setting, or a callable (a gunicorn server hook this server "
           "does not run), is an error that names it. `--print-config` prints the settings in "
           "effect as a config file; `--check-config` checks them and imports the app, then "
           "exits 0 or 1 without serving.",
           "",
           "Sizes take `k`, `m`, `g` (powers of 1024); times are seconds.",
           ""]
    for section in SECTIONS:
        out += [f"## {section}", "", "| flag | config key, environment | default | meaning |",
                "| --- | --- | --- | --- |"]
        for s in SETTINGS:
            if s.section != section:
                continue
            flags = ", ".join(f"`{f}`" for f in _flag_names(s))
            keys, envs = s.sources()
            default = s.default
            if s.kind == "size" and isinstance(default, int) and default >= 1024:
                default = _size_text(default)
            unit = f" {s.unit}" if s.unit and default not in (None, "") else ""
            bar = " \\| "
            choices = f" ({bar.join(s.choices)})" if s.choices else ""
            text = s.help.replace("|", "\\|")
            out.append(f"| {flags} | {keys}; {envs} | `{default!r}`{unit} | {text}{choices} |")
        out.append("")
    return "\n".join(out)


def _flag_names(s: Setting) -> list:
    if s.positional:
        return [s.metavar or s.name.upper()]
    names = [*s.flags, s.long_flag]
    if s.negatable:
        names.append("--no-" + s.long_flag[2:])
    return names


def _size_text(n: int) -> str:
    for unit, size in (("g", 1024 ** 3), ("m", 1024 ** 2), ("k", 1024)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


if __name__ == "__main__":
    print(markdown(), end="")
