"""The command line: flags -> one Config, logging set-up (`logs.py`), then the server.

Owns: flag names (gunicorn's where gunicorn has the flag), help texts, and the
exit codes: 0 after a clean shutdown, 1 for a bad flag or flag value, a
setting, bind, certificate or app-loading error (one line on stderr; a
traceback only with --log-level debug).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .config import Bind, Config, ConfigError
from .logs import setup_logging

log = logging.getLogger("ktlswsgi")


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = 1
    if t and t[-1] in units:
        mult, t = units[t[-1]], t[:-1]
    try:
        return int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 1048576, 64k, 100m)")


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


def build_parser() -> argparse.ArgumentParser:
    d = Config()
    p = ArgumentParser(
        prog="ktlswsgi",
        description="A WSGI server whose TLS can run in the Linux kernel (kTLS).")
    p.add_argument("app", nargs="?", help="the WSGI app: 'module:callable' or 'module:factory()'")
    p.add_argument("--version", action="version", version=f"ktlswsgi {__version__}")
    g = p.add_argument_group("sockets")
    g.add_argument("-b", "--bind", action="append", metavar="ADDRESS",
                   help="HOST:PORT, [IPv6]:PORT or unix:PATH; repeatable (default 127.0.0.1:8000)")
    g.add_argument("--backlog", type=int, default=d.backlog, help="listen() backlog (default %(default)s)")
    g.add_argument("--max-connections", type=int, default=d.max_connections,
                   help="open connections; accept pauses above (default %(default)s)")
    g.add_argument("--reuse-port", action="store_true",
                   help="each worker process gets its own SO_REUSEPORT socket (default: one shared)")
    g = p.add_argument_group("processes (gunicorn's names)")
    g.add_argument("-c", "--config", metavar="FILE",
                   help="a Python file of settings named as the long flags (workers = 4); "
                        "flags given here override it; re-read on HUP")
    g.add_argument("-w", "--workers", type=int, default=d.workers,
                   help="worker processes (default %(default)s)")
    g.add_argument("-t", "--timeout", type=float, default=d.timeout_s,
                   help="a worker whose reactor is silent this long is killed and replaced; "
                        "0: never (default %(default)s)")
    g.add_argument("--max-requests", type=int, default=d.max_requests,
                   help="a worker retires gracefully after this many requests; 0: never")
    g.add_argument("--max-requests-jitter", type=int, default=d.max_requests_jitter,
                   help="add a random 0..N to --max-requests per worker")
    g.add_argument("--preload", action="store_true",
                   help="import the app in the master before forking the workers")
    g.add_argument("-p", "--pid", metavar="FILE", help="write the master's PID to FILE")
    g.add_argument("-u", "--user", help="workers switch to this user after binding")
    g.add_argument("-g", "--group", help="workers switch to this group after binding")
    g.add_argument("-m", "--umask", help="umask of the master (octal, e.g. 027)")
    g.add_argument("--reload", action="store_true",
                   help="restart the workers when a .py file under the current directory "
                        "changes (development; needs the 'reload' extra: watchfiles)")
    g = p.add_argument_group("threads")
    g.add_argument("--threads", type=int, default=d.threads, help="worker pool threads (default %(default)s)")
    g.add_argument("--queue-size", type=int, default=d.queue_size,
                   help="requests waiting for a worker; beyond this: 503 (default %(default)s)")
    g = p.add_argument_group("timeouts (seconds)")
    g.add_argument("--keep-alive", type=float, default=d.keep_alive_s, help="idle keep-alive (default %(default)s)")
    g.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                   help="whole request head (slowloris) -> 408 (default %(default)s)")
    g.add_argument("--read-timeout", type=float, default=d.read_timeout_s,
                   help="request body stall -> 408 (default %(default)s)")
    g.add_argument("--write-timeout", type=float, default=d.write_timeout_s,
                   help="client reads nothing -> close (default %(default)s)")
    g.add_argument("--graceful-timeout", type=float, default=d.graceful_timeout_s,
                   help="in-flight requests on shutdown (default %(default)s)")
    g.add_argument("--handshake-timeout", type=float, default=d.handshake_timeout_s,
                   help="TLS handshake (default %(default)s)")
    g = p.add_argument_group("limits")
    g.add_argument("--limit-request-line", type=int, default=d.limit_request_line,
                   help="request line bytes -> 414 (default %(default)s)")
    g.add_argument("--limit-request-field_size", "--limit-request-field-size", type=int,
                   dest="limit_request_field_size", default=d.limit_request_field_size,
                   help="one header field bytes -> 431 (default %(default)s)")
    g.add_argument("--limit-request-fields", type=int, default=d.limit_request_fields,
                   help="header field count -> 431 (default %(default)s)")
    g.add_argument("--limit-request-headers-bytes", type=_size, default=d.limit_request_headers_bytes,
                   help="whole request head -> 431 (default %(default)s)")
    g.add_argument("--http", choices=["auto", "h11", "httptools"], default=d.http_parser,
                   dest="http_parser",
                   help="HTTP/1 request parser: httptools (llhttp) parses request heads "
                        "without a body, h11 everything else; h11: h11 alone; auto: "
                        "httptools when installed (default %(default)s)")
    g.add_argument("--max-body", type=_size, default=d.max_body_bytes,
                   help="request body bytes -> 413 (default %(default)s)")
    g.add_argument("--body-buffer", type=_size, default=d.body_buffer_bytes,
                   help="request body read ahead of the app (default %(default)s)")
    g.add_argument("--body-prebuffer", type=_size, default=d.body_prebuffer_bytes,
                   help="a request body up to this size arrives completely before the app "
                        "runs (a slow sender holds no worker thread); a larger one starts "
                        "the app once this much is buffered (default %(default)s)")
    g.add_argument("--body-min-rate", type=_size, default=d.body_min_rate,
                   help="request body bytes per second a client must keep up, over the "
                        "whole body, beyond a grace of --read-timeout; slower -> 408 "
                        "(Apache's MinRate; 0: only the stall timeout; default %(default)s)")
    g.add_argument("--high-water", type=_size, default=d.high_water_bytes,
                   help="outbound bytes per connection before the app waits (default %(default)s)")
    g = p.add_argument_group("TLS")
    g.add_argument("--tls", action="store_true", help="serve HTTPS (self-signed dev certificate if no --certfile)")
    g.add_argument("--certfile", help="PEM certificate chain (implies --tls)")
    g.add_argument("--keyfile", help="PEM private key (default: in --certfile)")
    g.add_argument("--keyfile-password-file", metavar="FILE",
                   help="file whose first line is the password of an encrypted key "
                        "(a file keeps it out of ps and shell history)")
    g.add_argument("--ciphers", help="TLS 1.2 cipher list (OpenSSL syntax)")
    g.add_argument("--tls13-ciphersuites", help="TLS 1.3 suites (OpenSSL syntax)")
    g.add_argument("--tls-min-version", choices=["1.2", "1.3"], default=d.tls_min_version)
    g.add_argument("--tls-transport", choices=["auto", "socket", "memory"], default=d.tls_transport,
                   help="socket: OpenSSL on the fd, kTLS when the kernel allows; "
                        "memory: BIO pair, userspace (default %(default)s)")
    g.add_argument("--no-ktls", action="store_true", help="never enable kTLS on the TLS context")
    g.add_argument("--http2", action=argparse.BooleanOptionalAction, default=d.http2,
                   help="offer HTTP/2 (ALPN h2) on TLS connections (default: on)")
    g.add_argument("--h2-max-concurrent-streams", type=int, default=d.h2_max_concurrent_streams,
                   help="HTTP/2 streams one connection may have open (default %(default)s)")
    g.add_argument("--h2-max-active-streams", type=int, default=d.h2_max_active_streams,
                   help="HTTP/2 streams of one connection in the app or sending their "
                        "response at once (each may hold a worker and an open file); the "
                        "others wait for their turn (default %(default)s)")
    g.add_argument("--h2-max-reset-streams", type=int, default=d.h2_max_reset_streams,
                   help="HTTP/2 streams a client may have reset (its RST_STREAMs, our resets "
                        "for its stream errors, refused streams) per 10 s before GOAWAY "
                        "ENHANCE_YOUR_CALM (Rapid Reset, MadeYouReset; default %(default)s)")
    g.add_argument("--h2-max-control-frames", type=int, default=d.h2_max_control_frames,
                   help="PING, SETTINGS, PRIORITY, empty DATA, unknown and surplus "
                        "WINDOW_UPDATE frames a client may send per 10 s before GOAWAY "
                        "(default %(default)s)")
    g.add_argument("--check-ktls", action="store_true",
                   help="probe kTLS on this host, run a loopback self-test, exit 0/1")
    g = p.add_argument_group("proxies (gunicorn's names)")
    g.add_argument("--forwarded-allow-ips", metavar="IPS",
                   default=os.environ.get("FORWARDED_ALLOW_IPS", d.forwarded_allow_ips),
                   help="direct peers (addresses, CIDR networks, '*') whose X-Forwarded-For/"
                        "-Proto set REMOTE_ADDR and the URL scheme (default: $FORWARDED_ALLOW_IPS, "
                        f"else {d.forwarded_allow_ips})")
    g.add_argument("--forwarded-header", choices=["x-forwarded", "forwarded"],
                   default=d.forwarded_header,
                   help="the one header family read from those peers: X-Forwarded-* or "
                        "RFC 7239 Forwarded (default %(default)s)")
    g.add_argument("--proxy-protocol", action="store_true",
                   help="every connection starts with a PROXY protocol v1/v2 header (HAProxy "
                        "send-proxy, AWS NLB), read before TLS; connections without one are closed")
    g.add_argument("--proxy-allow-from", metavar="IPS", default=d.proxy_allow_from,
                   help="direct peers allowed to send the PROXY header; '*': any "
                        "(default %(default)s)")
    g.add_argument("--proxy-header-timeout", type=float, default=d.proxy_header_timeout_s,
                   help="seconds from accept to the end of the PROXY header (default %(default)s)")
    g = p.add_argument_group("metrics")
    g.add_argument("--metrics-bind", metavar="HOST:PORT",
                   help="serve Prometheus metrics (GET /metrics), summed over all workers, "
                        "from a small process of the master (needs the 'metrics' extra)")
    g = p.add_argument_group("logging")
    g.add_argument("--access-logfile", metavar="FILE", help="access log file, '-' for stderr (default: none)")
    g.add_argument("--access-logformat", metavar="FORMAT", default=None,
                   help="the access log line in gunicorn's atoms (%%(h)s %%(t)s \"%%(r)s\" %%(s)s "
                        "%%(b)s %%(D)s %%({X-Request-Id}i)s %%({Content-Type}o)s ...) plus "
                        "%%(tls)s %%(ktls)s %%(aborted)s; credentials always log as '-'; "
                        "'json': one JSON object per line (default: combined format, %%(L)s, "
                        "then tls=... ktls=... on TLS and 'aborted')")
    g.add_argument("--access-log-hide-header", metavar="NAME", action="append", default=[],
                   dest="access_log_hide_headers",
                   help="a header whose value the access log never writes, besides "
                        "Authorization, Proxy-Authorization, Cookie and Set-Cookie (repeatable)")
    g.add_argument("--error-logfile", "--log-file", metavar="FILE", default="-",
                   help="error log file, '-' for stderr (default %(default)s); "
                        "reopened on USR1 and HUP")
    g.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    g.add_argument("--chdir", help="change to this directory before loading the app")
    return p


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


# gunicorn's setting names in a config file, for ours.
_FILE_ALIASES = {"wsgi_app": "app", "keepalive": "keep_alive", "preload_app": "preload",
                 "accesslog": "access_logfile", "errorlog": "error_logfile",
                 "loglevel": "log_level", "pidfile": "pid", "access_log_format": "access_logformat",
                 "proxy_allow_ips": "proxy_allow_from"}


def read_config_file(path: str, parser: argparse.ArgumentParser) -> dict:
    """The settings a Python config file defines, by argparse dest; ConfigError if unknown."""
    import runpy
    try:
        namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise ConfigError(f"--config {path!r}: no such file") from None
    except Exception as exc:
        raise ConfigError(f"--config {path!r}: {type(exc).__name__}: {exc}") from None
    known = {a.dest for a in parser._actions} - {"help", "version", "config"}
    values = {}
    for name, value in namespace.items():
        if name.startswith("_") or callable(value) or type(value).__name__ == "module":
            continue
        dest = _FILE_ALIASES.get(name, name)
        if dest not in known:
            raise ConfigError(f"--config {path!r}: unknown setting {name!r}")
        values[dest] = value
    return values


def parse(argv=None):
    """(args, Config) from the command line over the config file, if any."""
    parser = build_parser()
    args = parser.parse_args(argv)
    file_binds = None
    if args.config:
        values = read_config_file(args.config, parser)
        file_binds = values.pop("bind", None)
        if isinstance(file_binds, str):
            file_binds = [file_binds]
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    return args, config_from_args(args, file_binds)


def _user_and_group(user, group):
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
            gid = grp.getgrgid(int(group)).gr_gid if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid
        except KeyError:
            raise ConfigError(f"--group {group!r}: no such group") from None
    return name, uid, gid


def _umask(text):
    if text is None or isinstance(text, int):
        return text
    try:
        return int(text, 8) if text.isdigit() else int(text, 0)
    except ValueError:
        raise ConfigError(f"--umask {text!r}: not an octal number") from None


def config_from_args(args, file_binds=None) -> Config:
    user_name, uid, gid = _user_and_group(args.user, args.group)
    cfg = Config(
        app=args.app or "",
        binds=[Bind.parse(b) for b in (args.bind or file_binds or ["127.0.0.1:8000"])],
        metrics_bind=args.metrics_bind,
        workers=args.workers, timeout_s=args.timeout, max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter, preload=args.preload,
        reuse_port=args.reuse_port, pid_file=args.pid, user_name=user_name, uid=uid, gid=gid,
        umask=_umask(args.umask), reload=args.reload,
        threads=args.threads, queue_size=args.queue_size, backlog=args.backlog,
        max_connections=args.max_connections,
        keep_alive_s=args.keep_alive, header_timeout_s=args.header_timeout,
        read_timeout_s=args.read_timeout, write_timeout_s=args.write_timeout,
        graceful_timeout_s=args.graceful_timeout, handshake_timeout_s=args.handshake_timeout,
        limit_request_line=args.limit_request_line,
        limit_request_field_size=args.limit_request_field_size,
        limit_request_fields=args.limit_request_fields,
        limit_request_headers_bytes=args.limit_request_headers_bytes,
        http_parser=args.http_parser,
        max_body_bytes=args.max_body, body_buffer_bytes=args.body_buffer,
        body_prebuffer_bytes=args.body_prebuffer, body_min_rate=args.body_min_rate,
        high_water_bytes=args.high_water, low_water_bytes=max(1, args.high_water // 4),
        access_logfile=args.access_logfile, log_level=args.log_level, chdir=args.chdir,
        error_logfile=args.error_logfile, access_logformat=args.access_logformat,
        access_log_hide_headers=tuple(args.access_log_hide_headers),
        tls=bool(args.tls or args.certfile), certfile=args.certfile, keyfile=args.keyfile,
        keyfile_password=_read_password(args.keyfile_password_file),
        ciphers=args.ciphers, tls13_ciphersuites=args.tls13_ciphersuites,
        tls_min_version=args.tls_min_version, tls_transport=args.tls_transport,
        ktls=not args.no_ktls, http2=args.http2,
        h2_max_concurrent_streams=args.h2_max_concurrent_streams,
        h2_max_active_streams=args.h2_max_active_streams,
        h2_max_reset_streams=args.h2_max_reset_streams,
        h2_max_control_frames=args.h2_max_control_frames,
        forwarded_allow_ips=args.forwarded_allow_ips, forwarded_header=args.forwarded_header,
        proxy_protocol=args.proxy_protocol, proxy_allow_from=args.proxy_allow_from,
        proxy_header_timeout_s=args.proxy_header_timeout,
    )
    return cfg.validate()


def main(argv=None) -> int:
    try:
        args, cfg = parse(argv)
    except ConfigError as exc:
        print(f"ktlswsgi: error: {exc}", file=sys.stderr)
        return 1
    # The master: no writer thread before fork (each worker starts its own).
    listener = setup_logging(cfg, start_writer=False)
    try:
        if args.check_ktls:
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
