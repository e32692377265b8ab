"""The logs: --error-logfile, --access-logformat (gunicorn's atoms and ours),
reopening the error log on USR1, and refusing header atoms.

In this process: the formatter (every atom, the default line exactly, the
errors, that a format computes only the atoms it uses), the Config checks,
and `logs.setup_logging` (idempotent, no thread without `start_writer`).
Through `python -m ktlswsgi`: where the error log goes, USR1 after a
rename, one exact access line over TLS, and the one-line errors.
"""
from __future__ import annotations

import logging
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from ktlswsgi import accesslog, logs
from ktlswsgi.config import Config, ConfigError
from ktlswsgi.http1 import Request

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
STAMP = "[03/Dec/2026:04:28:10 +0000]"
TLS_INFO = {"tls_version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256", "ktls": "off"}


def request(target: bytes = b"/download", headers=None, method: bytes = b"GET") -> Request:
    if headers is None:
        headers = [(b"host", b"example.com"), (b"user-agent", b"curl/7.88.1"),
                   (b"cookie", b"session=SECRET"), (b"accept", b"*/*")]
    return Request(method, target, b"1.1", headers)


@pytest.fixture
def fixed_stamp(monkeypatch):
    monkeypatch.setattr(accesslog, "_now_bracketed", lambda: STAMP)


def render(fmt, req=None, *, peer="127.0.0.1", status=200, body_bytes=4194304,
           took_s=1.25, tls_info=None, aborted=False) -> str:
    """One line of `fmt` for a response that took exactly `took_s`."""
    line = accesslog.compile_format(fmt, clock_s=lambda: 100.0 + took_s)
    return line(peer, req or request(), status, body_bytes, 100.0, tls_info, aborted)


# -- the default line: exactly what it was before formats existed -------------------------------
def test_default_line_plain_tcp(fixed_stamp):
    assert render(None) == (f'127.0.0.1 - - {STAMP} "GET /download HTTP/1.1" 200 4194304 '
                            f'"-" "curl/7.88.1" 1.250000')


def test_default_line_tls_then_aborted(fixed_stamp):
    assert render(None, tls_info=TLS_INFO, aborted=True, status=499, body_bytes=0) == (
        f'127.0.0.1 - - {STAMP} "GET /download HTTP/1.1" 499 0 "-" "curl/7.88.1" 1.250000'
        f' tls=TLSv1.3/TLS_AES_128_GCM_SHA256 ktls=off aborted')


def test_default_line_is_the_default_format_plus_its_suffixes(fixed_stamp):
    kw = dict(tls_info=TLS_INFO, aborted=True)
    assert render(None, **kw) == (render(accesslog.DEFAULT_FORMAT, **kw)
                                  + " tls=TLSv1.3/TLS_AES_128_GCM_SHA256 ktls=off aborted")


# -- every atom ---------------------------------------------------------------------------------
FULL = request(b'/p%20a?x=1&y="', [(b"host", b"h"), (b"referer", b"https://r.example/"),
                                     (b"user-agent", b'UA "quoted" \\ back'),
                                     (b"authorization", b"Basic SECRET")])


@pytest.mark.parametrize("atom,expected", [
    ("h", "10.0.0.1"), ("l", "-"), ("u", "-"), ("t", STAMP),
    ("r", 'GET /p%20a?x=1&y=\\" HTTP/1.1'), ("m", "GET"), ("U", "/p%20a"),
    ("q", 'x=1&y=\\"'), ("H", "HTTP/1.1"), ("s", "404"), ("B", "0"), ("b", "-"),
    ("f", "https://r.example/"), ("a", 'UA \\"quoted\\" \\\\ back'),
    ("T", "2"), ("M", "2500"), ("D", "2500000"), ("L", "2.500000"),
    ("p", f"<{os.getpid()}>"),
    ("tls", "TLSv1.3/TLS_AES_128_GCM_SHA256"), ("ktls", "tx,rx"), ("aborted", "aborted"),
])
def test_each_atom(fixed_stamp, atom, expected):
    tls = dict(TLS_INFO, ktls="tx,rx")
    assert render(f"<%({atom})s>", FULL, peer="10.0.0.1", status=404, body_bytes=0,
                  took_s=2.5, tls_info=tls, aborted=True) == f"<{expected}>"


def test_atoms_without_a_value_on_plain_tcp_are_a_dash(fixed_stamp):
    req = request(b"/plain", [(b"host", b"h")])
    assert render("%(q)s %(f)s %(a)s %(tls)s %(ktls)s %(aborted)s %(b)s %(B)s", req,
                  body_bytes=512) == "- - - - - - 512 512"


def test_every_atom_is_in_the_table_and_documented():
    readme = open(os.path.join(TESTS_DIR, "..", "docs", "logs.md")).read()
    for atom in accesslog.ATOMS:
        assert f"`%({atom})s`" in readme, atom


def test_literal_text_and_percent_signs_pass_through(fixed_stamp):
    assert render("100%% of %(s)s {x} %%(h)s", status=201) == "100% of 201 {x} %(h)s"


def test_a_format_computes_only_the_atoms_it_uses():
    class Untouchable:
        """A request whose every field fails when read."""
        def __getattr__(self, name):
            raise AssertionError(f"the format read request.{name}")

    line = accesslog.compile_format("%(h)s %(s)s %(B)s %(b)s %(l)s %(aborted)s")
    assert line("::1", Untouchable(), 204, 0, 0.0, None, False) == "::1 204 0 - - -"

    class HeadersOnly:
        headers = [(b"user-agent", b"ua")]

        def __getattr__(self, name):
            raise AssertionError(f"the format read request.{name}")

    assert accesslog.compile_format("%(a)s")("x", HeadersOnly(), 200, 1, 0.0, None, False) == "ua"


def test_the_time_stamp_is_the_current_second():
    # Both ends from time.time(): time.strftime() without a time reads C's
    # time(NULL), a coarse clock that can still say the last second for a
    # few milliseconds after time.time() has moved on.
    before = time.time()
    got = accesslog._now_bracketed()
    after = time.time()
    assert got in {time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(t))
                   for t in (before, after)}


# -- refused formats -----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,message", [
    ("%({HTTP_AUTHORIZATION}e)s", "%({HTTP_AUTHORIZATION}e)s: environ values are never logged"),
    ("%({bad name}i)s", "%({bad name}i)s: 'bad name' is not a header name"),
    ("%(h)s %(x)s", "unknown atom %(x)s (atoms: h l u t r m U q H s B b f a T M D L p tls ktls"),
    ("%(h)d", "'%(h)d' at offset 0 is not an atom: write %(NAME)s, or %% for a literal %"),
    ("done 100%", "'%' at offset 8 is not an atom"),
    ("%(h)s %(t)", "'%(t)' at offset 6 is not an atom"),
    ("", "empty format"),
])
def test_refused_formats_say_why(fmt, message):
    with pytest.raises(accesslog.FormatError) as info:
        accesslog.compile_format(fmt)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


class _Req:
    method, target, http_version = b"GET", b"/a?b=1", b"1.1"
    headers = [(b"cookie", b"sid=SECRET"), (b"authorization", b"Bearer SECRET"),
               (b"x-request-id", b"req-42"), (b"traceparent", b"00-abc-def-01"),
               (b"x-api-key", b"SECRET"), (b"user-agent", b'ua "quoted"\x01')]


_RESPONSE = [(b"Set-Cookie", b"sid=SECRET"), (b"Content-Type", b"text/html"),
             (b"X-Trace", b"t1"), (b"X-Trace", b"t2")]


def test_header_atoms_log_ordinary_headers_and_never_credentials():
    fmt = ('%({X-Request-Id}i)s %({traceparent}i)s %({Cookie}i)s %({Authorization}i)s '
           '%({X-Api-Key}i)s %({Set-Cookie}o)s %({content-type}o)s %({X-Trace}o)s '
           '%({Missing}i)s "%({User-Agent}i)s"')
    line = accesslog.compile_format(fmt, hide=("X-Api-Key",))(
        "1.2.3.4", _Req(), 200, 5, 0.0, None, False, _RESPONSE)
    assert line == ('req-42 00-abc-def-01 - - - - text/html t1, t2 - '
                    '"ua \\"quoted\\"\\x01"'), line
    assert "SECRET" not in line


def test_json_line_is_one_escaped_object_without_credentials():
    line = accesslog.compile_format("json", clock_s=lambda: 1.5)(
        "1.2.3.4", _Req(), 200, 5, 1.0, {"tls_version": "TLSv1.3", "cipher": "C", "ktls": "tx"},
        True, _RESPONSE)
    assert "\n" not in line and "SECRET" not in line
    obj = json.loads(line)
    assert list(obj) == list(accesslog.JSON_FIELDS)
    assert obj["remote_addr"] == "1.2.3.4" and obj["status"] == 200 and obj["aborted"] is True
    assert obj["request_id"] == "req-42" and obj["traceparent"] == "00-abc-def-01"
    assert obj["user_agent"] == 'ua "quoted"\x01' and obj["duration_s"] == 0.5
    assert obj["target"] == "/a?b=1" and obj["tls"] == "TLSv1.3/C" and obj["ktls"] == "tx"
    # A value built to close the object and open another stays a string.
    class Forger(_Req):
        headers = [(b"user-agent", b'x", "status": 500, "y": "')]
    forged = json.loads(accesslog.compile_format("json")("h", Forger(), 200, 0, 0.0, None,
                                                         False))
    assert forged["status"] == 200 and forged["user_agent"] == 'x", "status": 500, "y": "'


def test_config_checks_the_format_and_the_log_paths(tmp_path):
    with pytest.raises(ConfigError, match=r"^--access-logformat: %\(\{cookie\}e\)s: "):
        Config(access_logformat="%({cookie}e)s").validate()
    missing = tmp_path / "nope" / "e.log"
    with pytest.raises(ConfigError, match=r"^--error-logfile '.*/nope/e\.log': no such directory"):
        Config(error_logfile=str(missing)).validate()
    with pytest.raises(ConfigError, match=r"^--access-logfile '.*': is a directory"):
        Config(access_logfile=str(tmp_path)).validate()
    # Made absolute against the start directory; checked, not created.
    cfg = Config(error_logfile="e.log", access_logfile="-")
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        cfg.validate()
    finally:
        os.chdir(old)
    assert cfg.error_logfile == str(tmp_path / "e.log") and cfg.access_logfile == "-"
    assert not (tmp_path / "e.log").exists()


# -- setup_logging in this process -----------------------------------------------------------
@pytest.fixture
def own_logging():
    """Put the loggers back as they were (other tests' caplog needs propagation)."""
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate)
             for lg in (logging.getLogger("ktlswsgi"), logging.getLogger("ktlswsgi.access"))]
    yield
    logs._take_down()
    accesslog.set_format(None)
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def lines(path) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


def log_one(target: bytes, status: int = 204, body_bytes: int = 0) -> None:
    accesslog.log_response("127.0.0.1", request(target), status, body_bytes,
                           time.monotonic(), None)


def test_setup_logging_writes_both_logs_and_a_second_call_replaces_the_first(own_logging, tmp_path):
    first = Config(error_logfile=str(tmp_path / "e1.log"), access_logfile=str(tmp_path / "a1.log"),
                   access_logformat="%(U)s %(s)s %(b)s").validate()
    writer1 = logs.setup_logging(first)
    assert writer1 is not None
    logging.getLogger("ktlswsgi.test").warning("first error line")
    log_one(b"/one")
    file_handlers = list(logs._file_handlers)

    second = first.replace(error_logfile=str(tmp_path / "e2.log"),
                           access_logfile=str(tmp_path / "a2.log"),
                           access_logformat="%(m)s %(U)s").validate()
    writer2 = logs.setup_logging(second)
    logging.getLogger("ktlswsgi.test").warning("second error line")
    log_one(b"/two")
    writer2.stop()
    writer2.stop()       # the caller's stop after ours: nothing happens

    # The first writer was stopped after writing what it had queued; its files closed.
    assert writer1._thread is None
    assert all(h.stream is None for h in file_handlers)
    assert lines(tmp_path / "a1.log") == ["/one 204 -"]
    assert lines(tmp_path / "a2.log") == ["GET /two"]
    assert [l.split("] ", 3)[-1] for l in lines(tmp_path / "e1.log")] == ["first error line"]
    e2 = lines(tmp_path / "e2.log")
    assert len(e2) == 1 and e2[0].endswith(f"] [{os.getpid()}] [WARNING] second error line")
    assert len(logging.getLogger("ktlswsgi").handlers) == 1
    assert len(logging.getLogger("ktlswsgi.access").handlers) == 1


def test_setup_logging_without_the_writer_starts_no_thread_and_logs_no_access(
        own_logging, tmp_path):
    cfg = Config(error_logfile=str(tmp_path / "e.log"),
                 access_logfile=str(tmp_path / "a.log")).validate()
    before = set(threading.enumerate())
    assert logs.setup_logging(cfg, start_writer=False) is None
    assert set(threading.enumerate()) == before
    log_one(b"/master")
    logging.getLogger("ktlswsgi.arbiter").info("master line")
    assert not (tmp_path / "a.log").exists()
    assert lines(tmp_path / "e.log")[0].endswith("[INFO] master line")
    # Then, as a worker after the fork: the same call with the writer.
    writer = logs.setup_logging(cfg)
    log_one(b"/worker")
    writer.stop()
    (line,) = lines(tmp_path / "a.log")
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET /worker HTTP/1\.1" 204 0 "-" '
                        r'"curl/7\.88\.1" \d+\.\d{6}', line), line


def test_reopen_files_reopens_the_error_log(own_logging, tmp_path):
    path = tmp_path / "e.log"
    logs.setup_logging(Config(error_logfile=str(path)).validate())
    err = logging.getLogger("ktlswsgi.test")
    err.warning("before")
    os.rename(path, tmp_path / "e.log.1")
    assert logs.reopen_files() == [str(path)]
    err.warning("after")
    assert [l.rsplit(" ", 1)[-1] for l in lines(tmp_path / "e.log.1")] == ["before"]
    assert [l.rsplit(" ", 1)[-1] for l in lines(path)] == ["after"]


def test_without_setup_the_access_lines_go_through_the_logger(own_logging, caplog):
    accesslog.set_format("%(m)s %(U)s %(s)s")
    caplog.set_level(logging.INFO, logger="ktlswsgi.access")
    log_one(b"/via-logger?q=1", status=201)
    assert [r.getMessage() for r in caplog.records if r.name == "ktlswsgi.access"] == \
        ["GET /via-logger 201"]


# -- through the command line --------------------------------------------------------------------
def cli_env() -> dict:
    return dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ktlswsgi", *args], cwd=cwd or TESTS_DIR,
                          env=cli_env(), capture_output=True, text=True, timeout=20)


def wait_line(path, pattern: str, proc, timeout: float = 10.0) -> str:
    """The first line of file `path` that matches regex `pattern`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = [l for l in lines(path) if re.search(pattern, l)]
        except FileNotFoundError:
            found = []
        if found:
            return found[0]
        assert proc.poll() is None, f"exited {proc.returncode}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no line matching {pattern!r} in {path}"
        time.sleep(0.02)


def stop(proc) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    return proc.returncode, err


def bad_request(port: int) -> None:
    """A request without Host: a 400, and an info line from the worker."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")


def test_error_logfile_gets_the_lines_and_stderr_none(ktlswsgi_cli, tmp_path):
    path = tmp_path / "error.log"
    proc = ktlswsgi_cli("apps.log_apps:app", "--error-logfile", str(path))
    wait_line(path, r"\] worker \d+ ready", proc)
    bad_request(proc.port)
    wait_line(path, r"\[INFO\] 127\.0\.0\.1: 400 ", proc)
    code, err = stop(proc)
    assert code == 0 and err == "", err
    text = path.read_text()
    for expected in ("master ", "booting worker", "SIGTERM: graceful stop", "exit 0"):
        assert expected in text, text


def test_usr1_after_renaming_the_error_log_writes_a_new_file(ktlswsgi_cli, tmp_path):
    path, rotated = tmp_path / "error.log", tmp_path / "error.log.1"
    # --log-file: gunicorn's other name for --error-logfile.
    proc = ktlswsgi_cli("apps.log_apps:app", "--log-file", str(path))
    worker = re.search(r"booting worker (\d+)", wait_line(path, r"booting worker", proc))[1]
    wait_line(path, r"worker \d+ ready", proc)
    os.rename(path, rotated)
    proc.send_signal(signal.SIGUSR1)
    assert str(path) in wait_line(path, r"SIGUSR1: reopened log files", proc)
    # The master told the worker; once it has reopened, its lines go to the new file.
    deadline = time.monotonic() + 10
    while not any(f"[{worker}] [INFO] 127.0.0.1: 400" in l for l in lines(path)):
        assert time.monotonic() < deadline, f"the worker still writes elsewhere: {lines(path)}"
        bad_request(proc.port)
        time.sleep(0.05)
    code, err = stop(proc)
    assert code == 0 and err == "", err
    old, new = rotated.read_text(), path.read_text()
    assert "ready" in old and "SIGUSR1" not in old and "shutting down" not in old, old
    assert f"[{worker}] [INFO] shutting down" in new and "exit 0" in new, new


def test_access_logformat_over_tls_gives_exactly_the_line(ktlswsgi_cli, tmp_path, cert_pair):
    access = tmp_path / "access.log"
    fmt = ('%(h)s %(l)s %(u)s "%(r)s" %(m)s %(U)s %(q)s %(H)s %(s)s %(b)s %(B)s %(p)s '
           '%(tls)s %(ktls)s %(aborted)s %(D)s')
    proc = ktlswsgi_cli("apps.log_apps:app", "--certfile", cert_pair[0], "--keyfile", cert_pair[1],
                        "--access-logfile", str(access), "--access-logformat", fmt)
    ctx = ssl.create_default_context(cafile=cert_pair[0])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", proc.port), timeout=10),
                         server_hostname="localhost") as tls:
        tls.sendall(b"GET /empty?x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += tls.recv(4096)
        version, cipher = tls.version(), tls.cipher()[0]
    head = reply.decode("latin-1").lower()
    pid = re.search(r"\r\nx-pid: (\d+)", head)[1]
    ktls = re.search(r"\r\nx-ktls: (\S+)", head)[1]
    line = wait_line(access, "/empty", proc)
    expected = (f'127.0.0.1 - - "GET /empty?x=1 HTTP/1.1" GET /empty x=1 HTTP/1.1 200 - 0 '
                f'<{pid}> {version}/{cipher} {ktls} - ')
    assert line.startswith(expected) and re.fullmatch(r"\d+", line[len(expected):]), \
        f"{line!r} is not {expected!r} + microseconds"
    assert int(line[len(expected):]) < 10_000_000
    code, err = stop(proc)
    assert code == 0, err


@pytest.mark.parametrize("fmt,named", [
    ('%(h)s "%(r)s" %({HTTP_COOKIE}e)s', "%({HTTP_COOKIE}e)s: environ values are never "
                                         "logged (the environ holds cookies and credentials)"),
    ("%(h)s %(zz)s", "unknown atom %(zz)s"),
])
def test_a_refused_format_exits_1_with_one_line(fmt, named):
    r = run_cli("apps.log_apps:app", "--access-logformat", fmt)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(
        "ktlswsgi: error: --access-logformat: "), r.stderr
    assert named in r.stderr


def test_a_refused_format_in_a_config_file_exits_1_with_one_line(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("access_log_format = '%(h)s %(nope)s'\n")   # gunicorn's setting name
    r = run_cli("apps.log_apps:app", "-c", str(conf))
    assert r.returncode == 1 and r.stderr.startswith(
        "ktlswsgi: error: --access-logformat: unknown atom %(nope)s"), r.stderr
    assert r.stderr.count("\n") == 1


def test_an_error_logfile_in_a_missing_directory_exits_1_with_one_line(tmp_path):
    r = run_cli("apps.log_apps:app", "--error-logfile", str(tmp_path / "none" / "e.log"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "--error-logfile" in r.stderr and "no such directory" in r.stderr


# -- behind a proxy, with correlation headers ----------------------------------------------------
def test_access_log_behind_a_trusted_proxy_names_the_client_and_the_request_id(ktlswsgi_cli,
                                                                                tmp_path):
    """The address a trusted X-Forwarded-For gives is %(h)s; X-Request-Id and
    traceparent are logged; Cookie and Authorization never, as text or JSON."""
    text_log, json_log = tmp_path / "access.log", tmp_path / "access.json"
    procs = [
        (ktlswsgi_cli("apps.log_apps:app", "--access-logfile", str(text_log),
                      "--forwarded-allow-ips", "127.0.0.1", "--access-logformat",
                      '%(h)s %({X-Request-Id}i)s %({traceparent}i)s %({Cookie}i)s '
                      '%({Authorization}i)s "%(r)s" %(s)s'), text_log),
        (ktlswsgi_cli("apps.log_apps:app", "--access-logfile", str(json_log),
                      "--forwarded-allow-ips", "127.0.0.1", "--access-logformat", "json"),
         json_log),
    ]
    for proc, path in procs:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n"
                      b"X-Request-Id: req-42\r\ntraceparent: 00-4bf92f-00f067-01\r\n"
                      b"Cookie: sid=SECRET\r\nAuthorization: Bearer SECRET\r\n"
                      b"Connection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200 ")
        line = wait_line(path, r"req-42", proc)
        code, err = stop(proc)
        assert code == 0, err
        assert "SECRET" not in path.read_text() and "SECRET" not in err
        if path is text_log:
            assert line == '203.0.113.7 req-42 00-4bf92f-00f067-01 - - "GET /hello HTTP/1.1" 200'
        else:
            obj = json.loads(line)
            assert (obj["remote_addr"], obj["request_id"], obj["traceparent"]) == (
                "203.0.113.7", "req-42", "00-4bf92f-00f067-01")
            assert obj["method"] == "GET" and obj["target"] == "/hello" and obj["status"] == 200


def test_wsgi_errors_goes_to_the_error_log_file(ktlswsgi_cli, tmp_path):
    """PEP 3333's wsgi.errors is the error log: --error-logfile, not stderr;
    a line written in pieces is one line."""
    path = tmp_path / "error.log"
    proc = ktlswsgi_cli("apps.log_apps:app", "--error-logfile", str(path))
    wait_line(path, r"worker \d+ ready", proc)
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
        s.sendall(b"GET /errors?marker-wsgi-errors-9c1f HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    line = wait_line(path, r"marker-wsgi-errors-9c1f", proc)
    assert line.endswith("[ERROR] marker-wsgi-errors-9c1f"), line
    code, err = stop(proc)
    assert code == 0 and "marker" not in err, err


def test_a_header_name_never_reaches_a_logged_reason(ktlswsgi_cli, tmp_path):
    """Request bytes, header names included, are never quoted in the error log:
    a field over --limit-request-field_size, an illegal header name."""
    path = tmp_path / "error.log"
    proc = ktlswsgi_cli("apps.log_apps:app", "--error-logfile", str(path),
                        "--limit-request-field_size", "100", "--http", "h11")
    wait_line(path, r"worker \d+ ready", proc)
    marker = b"X-Name-Marker-5d2e"
    for request in (b"GET / HTTP/1.1\r\nHost: x\r\n" + marker + b": " + b"v" * 200 + b"\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\n" + marker + b"(): v\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\n" + marker + b" : v\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as s:
            s.sendall(request)
            assert s.recv(100)[:12] in (b"HTTP/1.1 431", b"HTTP/1.1 400")
    wait_line(path, r"a header field over 100 bytes", proc)
    code, err = stop(proc)
    assert code == 0, err
    assert marker.decode() not in path.read_text() and marker.decode() not in err
