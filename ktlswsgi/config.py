"""One Config object: every setting, its default and its unit, in one place.

Owns: the defaults and the validation of settings.  `cli.py` fills it from
flags; every other module reads it and none re-parses flags or the environment.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from . import h1head


class ConfigError(ValueError):
    """A setting is invalid; the message is one line for the operator."""


def address_text(addr) -> str:
    """HOST:PORT of a socket address tuple, IPv6 hosts in brackets."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Bind:
    """One listening address: ("tcp", host, port) or ("unix", path)."""

    family: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> "Bind":
        if text.startswith("unix:"):
            path = text[5:]
            if not path:
                raise ConfigError(f"bind {text!r}: empty unix socket path")
            return cls("unix", path=path)
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep:
                raise ConfigError(f"bind {text!r}: missing ']' after IPv6 address")
            port_s = rest[1:] if rest.startswith(":") else ""
        elif ":" in text:
            host, _, port_s = text.rpartition(":")
        else:
            host, port_s = text, ""
        if not port_s:
            port = 8000
        else:
            try:
                port = int(port_s)
            except ValueError:
                raise ConfigError(f"bind {text!r}: port {port_s!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise ConfigError(f"bind {text!r}: port out of range")
        return cls("tcp", host=host or "0.0.0.0", port=port)

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass
class Config:
    app: str = ""
    binds: list = field(default_factory=lambda: [Bind.parse("127.0.0.1:8000")])
    # processes (the master: arbiter.py)
    workers: int = 1                   # worker processes forked by the master
    timeout_s: float = 30.0            # a worker whose reactor is silent this long is replaced; 0: never
    max_requests: int = 0              # a worker retires after this many requests; 0: never
    max_requests_jitter: int = 0       # ... plus a random 0..jitter, so workers do not retire together
    preload: bool = False              # import the app in the master before forking
    reuse_port: bool = False           # each worker its own SO_REUSEPORT listening socket
    pid_file: str | None = None
    user_name: str | None = None       # workers switch to this user (and uid/gid) after binding
    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
    reload: bool = False               # restart workers when the code changes (development)
    metrics_bind: str | None = None    # HOST:PORT of the Prometheus endpoint (metrics.py)
    threads: int = 16
    queue_size: int = 256              # requests waiting for a worker; beyond: 503
    backlog: int = 2048                # listen(2) backlog
    max_connections: int = 1000        # accepted sockets per process; beyond: stop accepting

    keep_alive_s: float = 5.0          # idle keep-alive between requests
    header_timeout_s: float = 10.0     # first byte to end of headers (slowloris) -> 408
    read_timeout_s: float = 30.0       # request body stall while the app waits -> 408
    write_timeout_s: float = 30.0      # no write progress while output is pending -> close
    graceful_timeout_s: float = 30.0   # in-flight requests may finish this long on shutdown
    handshake_timeout_s: float = 10.0  # TLS handshake
    linger_s: float = 2.0              # unread request body drained after an early response
    linger_bytes: int = 64 * 1024      # ... at most this much, else close

    limit_request_line: int = 4094     # bytes; longer -> 414
    limit_request_field_size: int = 8190  # bytes of one header line; longer -> 431
    limit_request_fields: int = 100    # header count; more -> 431
    limit_request_headers_bytes: int = 64 * 1024  # whole head; larger -> 431
    max_body_bytes: int = 100 * 1024 * 1024  # request body; larger -> 413
    body_buffer_bytes: int = 256 * 1024      # request body read ahead of the app
    body_prebuffer_bytes: int = 64 * 1024    # a body up to this is complete before the app runs
    body_min_rate: int = 500                 # request body bytes/s below which -> 408; 0: off
    pipeline_buffer_bytes: int = 64 * 1024   # pipelined bytes held while a request runs
    high_water_bytes: int = 1024 * 1024      # outbound queue: producer waits above this
    low_water_bytes: int = 256 * 1024        # ... until drained below this
    recv_bytes: int = 64 * 1024              # one read from a socket
    http_parser: str = "auto"                # HTTP/1 heads: auto | h11 | httptools (http1.py)

    access_logfile: str | None = None
    # the logs (logs.py, accesslog.py; README "Logs")
    error_logfile: str = "-"           # the error log: a file, or '-' for stderr
    access_logformat: str | None = None  # gunicorn's atoms (accesslog.ATOMS); None: the default line
    access_log_hide_headers: tuple = ()  # header names always logged as '-', besides credentials
    log_level: str = "info"
    chdir: str | None = None

    # TLS
    tls: bool = False
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    ciphers: str | None = None
    tls13_ciphersuites: str | None = None
    tls_min_version: str = "1.2"
    tls_transport: str = "auto"        # auto | socket | memory
    ktls: bool = True                  # SSL_OP_ENABLE_KTLS on the context
    http2: bool = True                 # offer h2 by ALPN on TLS (h2 before http/1.1)
    h2_max_concurrent_streams: int = 100     # SETTINGS_MAX_CONCURRENT_STREAMS
    h2_max_active_streams: int = 32    # of one connection in the app or sending at once
    h2_max_reset_streams: int = 200    # streams reset or refused per 10 s -> GOAWAY (Rapid Reset)
    h2_max_control_frames: int = 1000  # PING/SETTINGS/PRIORITY/empty DATA/... per 10 s -> GOAWAY
    max_handshakes: int = 256          # concurrent TLS handshakes; beyond: stop accepting

    # behind proxies (forwarded.py, proxyproto.py; README "Behind proxies and load balancers")
    forwarded_allow_ips: str = "127.0.0.1,::1"  # peers whose forwarding headers apply; "*": any
    forwarded_header: str = "x-forwarded"  # the one family read: x-forwarded | forwarded (RFC 7239)
    proxy_protocol: bool = False       # every connection starts with a PROXY v1/v2 header
    proxy_allow_from: str = "127.0.0.1,::1"  # direct peers that may send it; "*": any
    proxy_header_timeout_s: float = 10.0     # accept to the end of the PROXY header -> close
    proxy_header_max_bytes: int = 16 + 1024  # a longer PROXY header -> close (v2 length field)
    # The two specs parsed (by proxy_trust()); not settings, so not in __init__.
    _proxy_trust: tuple | None = field(default=None, init=False, repr=False, compare=False)

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
        if self.forwarded_header not in ("x-forwarded", "forwarded"):
            raise ConfigError(f"forwarded_header {self.forwarded_header!r}: "
                              f"use x-forwarded or forwarded")
        if self.proxy_header_timeout_s <= 0:
            raise ConfigError("proxy_header_timeout_s must be > 0 seconds")
        if not MIN_MAX_BYTES <= self.proxy_header_max_bytes <= V2_FIXED_BYTES + 0xFFFF:
            raise ConfigError(f"proxy_header_max_bytes must be "
                              f"{MIN_MAX_BYTES}..{V2_FIXED_BYTES + 0xFFFF}")
        self._proxy_trust = None
        self.proxy_trust()

    def _validate_logs(self) -> None:
        from .accesslog import compile_format
        try:
            compile_format(self.access_logformat, hide=self.access_log_hide_headers)
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
        positive = ["threads", "queue_size", "backlog", "max_connections",
                    "limit_request_line", "limit_request_field_size",
                    "limit_request_fields", "limit_request_headers_bytes",
                    "body_buffer_bytes", "pipeline_buffer_bytes",
                    "high_water_bytes", "recv_bytes", "max_handshakes",
                    "h2_max_concurrent_streams", "h2_max_active_streams", "h2_max_reset_streams",
                    "h2_max_control_frames"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        for name in ["keep_alive_s", "header_timeout_s", "read_timeout_s",
                     "write_timeout_s", "graceful_timeout_s", "handshake_timeout_s"]:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds")
        if self.max_body_bytes < 0:
            raise ConfigError("max_body_bytes must be >= 0")
        if not 0 <= self.body_prebuffer_bytes <= self.body_buffer_bytes:
            raise ConfigError("--body-prebuffer must be between 0 and --body-buffer")
        if self.body_min_rate < 0:
            raise ConfigError("--body-min-rate must be >= 0")
        if self.low_water_bytes >= self.high_water_bytes:
            raise ConfigError("low_water_bytes must be below high_water_bytes")
        if self.tls_transport not in ("auto", "socket", "memory"):
            raise ConfigError(f"tls_transport {self.tls_transport!r}: use auto, socket or memory")
        if self.http_parser not in ("auto", "h11", "httptools"):
            raise ConfigError(f"--http {self.http_parser!r}: use auto, h11 or httptools")
        if self.http_parser == "httptools" and not h1head.AVAILABLE:
            raise ConfigError("--http httptools: the httptools package is not installed")
        if self.tls_min_version not in ("1.2", "1.3"):
            raise ConfigError(f"tls_min_version {self.tls_min_version!r}: use 1.2 or 1.3")
        if self.keyfile and not self.certfile:
            raise ConfigError("--keyfile needs --certfile")
        if self.keyfile_password is not None and not self.certfile:
            raise ConfigError("--keyfile-password-file needs --certfile")
        if self.workers < 1:
            raise ConfigError("--workers must be >= 1")
        if self.timeout_s < 0 or self.max_requests < 0 or self.max_requests_jitter < 0:
            raise ConfigError("--timeout, --max-requests and --max-requests-jitter must be >= 0")
        if self.reload and self.preload:
            raise ConfigError("--reload needs the app imported in each worker: drop --preload")
        if self.chdir and not os.path.isdir(self.chdir):
            raise ConfigError(f"--chdir {self.chdir!r}: not a directory")
        self._validate_proxies()
        self._validate_logs()
        return self
