"""The command line as an operator meets it: `python -m ktlswsgi ...` in a subprocess.

Exit codes and the one-line errors for bad APP strings and busy ports, the
bundled demo app with curl, the access log, SIGTERM, and every kind of --bind
(IPv4, IPv6, unix socket, several at once).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import ktlswsgi
from support import free_port

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def cli_env() -> dict:
    return dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_cli(*args, cwd=None, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run `python -m ktlswsgi ARGS` to completion (a server that starts is a failure here)."""
    try:
        return subprocess.run([sys.executable, "-m", "ktlswsgi", *args], cwd=cwd or TESTS_DIR,
                              env=cli_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"ktlswsgi {' '.join(args)} did not exit within {timeout}s "
                             f"(stderr: {exc.stderr!r})") from None


def error_lines(stderr: str) -> list:
    """The lines that report an error: all but the log's INFO/DEBUG/WARNING lines
    (the master says where it listens and which workers it boots)."""
    return [line for line in stderr.splitlines() if line.strip()
            and not any(f"] [{lvl}] " in line for lvl in ("INFO", "DEBUG", "WARNING"))]


def curl(*args, timeout: float = 30.0) -> subprocess.CompletedProcess:
    r = subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *args],
                       capture_output=True, timeout=timeout + 10)
    assert r.returncode == 0, r.stderr
    return r


def stop(proc, timeout: float = 10.0):
    """SIGTERM; returns (exit code, seconds to exit, stdout, stderr)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"no exit {timeout}s after SIGTERM; stderr: {err}")
    return proc.returncode, time.monotonic() - started, out, err


def private_tmpdir(tmp_path) -> dict:
    """TMPDIR for a subprocess, so its temporary files are seen (and cleaned) here."""
    d = tmp_path / "tmpdir"
    d.mkdir(exist_ok=True)
    return {"TMPDIR": str(d)}


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port6() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


# -- --version, --help -----------------------------------------------------------------------------
def test_version_prints_the_package_version_and_exits_0():
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"ktlswsgi {ktlswsgi.__version__}"


def test_help_lists_the_flags_and_exits_0():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--bind", "--threads", "--keep-alive", "--write-timeout", "--access-logfile",
                 "--log-level", "--max-body", "--version", "module:callable"):
        assert flag in r.stdout, flag


def test_console_script_is_installed():
    exe = shutil.which("ktlswsgi")
    if exe is None:
        pytest.skip("the ktlswsgi console script is not on PATH (package not installed here)")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout.strip() == f"ktlswsgi {ktlswsgi.__version__}"


# -- bad APP strings: one clear line, no traceback ----------------------------------------------------
BAD_APPS = [
    pytest.param("nocolon", ["'nocolon'", "module:callable"], id="no-colon"),
    pytest.param("nosuchmodule_xyz:app", ["'nosuchmodule_xyz'", "no such module"], id="no-such-module"),
    pytest.param("apps.cli_apps:missing_attr", ["'apps.cli_apps'", "'missing_attr'"], id="missing-attr"),
    pytest.param("apps.cli_apps:not_callable", ["not callable"], id="not-callable"),
    pytest.param("apps.cli_import_error:app",
                 ["'apps.cli_import_error'", "ktlswsgi_missing_dependency_xyz"], id="missing-dependency"),
    pytest.param("apps.cli_raises_importerror:app",
                 ["'apps.cli_raises_importerror'", "ImportError", "missing native library"],
                 id="module-raises-importerror"),
    pytest.param("apps.cli_prefix_dep:app", ["'apps.cli_prefix'"], id="missing-dependency-name-is-a-prefix"),
    pytest.param("apps.cli_apps:broken_factory()", ["broken_factory", "factory cannot build the app"],
                 id="factory-raises"),
]


@pytest.mark.parametrize("spec,expected", BAD_APPS)
def test_bad_app_exits_nonzero_with_one_clear_line(spec, expected):
    r = run_cli("-b", f"127.0.0.1:{free_port()}", spec)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert r.stdout == ""


def test_bad_app_with_debug_log_level_shows_the_traceback():
    r = run_cli("-b", f"127.0.0.1:{free_port()}", "--log-level", "debug", "apps.cli_import_error:app")
    assert r.returncode != 0
    assert "Traceback" in r.stderr, r.stderr
    assert "ktlswsgi_missing_dependency_xyz" in r.stderr


def test_missing_app_argument_exits_nonzero():
    r = run_cli("-b", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0
    assert "APP" in r.stderr and "Traceback" not in r.stderr


def test_factory_app_is_called_and_served(ktlswsgi_cli):
    proc = ktlswsgi_cli("apps.cli_apps:make_app()")
    r = curl(f"http://127.0.0.1:{proc.port}/")
    assert r.stdout == b"made by a factory\n"
    code, _, _, err = stop(proc)
    assert code == 0, err


# -- the demo --------------------------------------------------------------------------------------
ACCESS_LINE = re.compile(
    r'^(?P<peer>\S+) - - \[[^\]]+\] "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/1\.[01]" '
    r'(?P<status>\d{3}) (?P<size>\d+) "(?P<referer>[^"]*)" "(?P<ua>[^"]*)" (?P<secs>\d+\.\d+)$')


def test_demo_serves_page_and_download_logs_each_request_and_stops_on_sigterm(ktlswsgi_cli, tmp_path):
    proc = ktlswsgi_cli("ktlswsgi.demo:app", "--access-logfile", "-", env=private_tmpdir(tmp_path))
    base = f"http://127.0.0.1:{proc.port}"

    page = curl("-D", "-", "-w", "\n%{http_code} %{size_download}", base + "/")
    head, _, rest = page.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-type: text/html" in head.lower()
    html, _, tail = rest.rpartition(b"\n")
    assert b"Hello from ktlswsgi" in html
    page_status, page_size = tail.split()
    assert page_status == b"200"

    download = curl(base + "/download")
    expected = hashlib.sha256(bytes(range(256)) * 4096 * 4).hexdigest()
    assert len(download.stdout) == 4 * 1024 * 1024
    assert hashlib.sha256(download.stdout).hexdigest() == expected

    code, took, _, err = stop(proc)
    assert code == 0, err
    assert took < 5, took
    access = [m for m in map(ACCESS_LINE.match, err.splitlines()) if m]
    assert len(access) == 2, err
    assert (access[0]["method"], access[0]["target"], access[0]["status"], access[0]["size"]) == \
        ("GET", "/", "200", page_size.decode())
    assert (access[1]["method"], access[1]["target"], access[1]["status"], access[1]["size"]) == \
        ("GET", "/download", "200", str(4 * 1024 * 1024))
    for m in access:
        assert m["peer"] == "127.0.0.1"
        assert m["ua"].startswith("curl/")


def test_without_access_logfile_nothing_is_logged_per_request(ktlswsgi_cli, tmp_path):
    proc = ktlswsgi_cli("ktlswsgi.demo:app", env=private_tmpdir(tmp_path))
    curl(f"http://127.0.0.1:{proc.port}/")
    code, _, _, err = stop(proc)
    assert code == 0
    assert not any(ACCESS_LINE.match(line) for line in err.splitlines()), err


def test_demo_leaves_no_temporary_file_behind(ktlswsgi_cli, tmp_path):
    env = private_tmpdir(tmp_path)
    proc = ktlswsgi_cli("ktlswsgi.demo:app", env=env)
    assert len(curl(f"http://127.0.0.1:{proc.port}/download").stdout) == 4 * 1024 * 1024
    code, _, _, err = stop(proc)
    assert code == 0, err
    left = os.listdir(env["TMPDIR"])
    assert left == [], f"the demo left {left} (4 MiB each) in its temporary directory"


# -- binds ----------------------------------------------------------------------------------------
def test_ipv6_loopback_bind_serves_beside_ipv4(ktlswsgi_cli):
    if not ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) is not available on this host")
    port6 = free_port6()
    proc = ktlswsgi_cli("apps.cli_apps:app", "-b", f"[::1]:{port6}")
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("::1", port6), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "nothing listening on [::1]"
            time.sleep(0.05)
    assert curl("-g", f"http://[::1]:{port6}/").stdout == b"hello from apps.cli_apps\n"
    assert curl(f"http://127.0.0.1:{proc.port}/").stdout == b"hello from apps.cli_apps\n"
    code, _, _, err = stop(proc)
    assert code == 0, err


def test_unix_socket_bind_serves_and_is_removed_on_exit(ktlswsgi_cli):
    d = tempfile.mkdtemp(prefix="ktlswsgi-test-", dir="/tmp")
    path = os.path.join(d, "s.sock")
    try:
        proc = ktlswsgi_cli("apps.cli_apps:app", "-b", f"unix:{path}")
        r = curl("--unix-socket", path, "http://localhost/")
        assert r.stdout == b"hello from apps.cli_apps\n"
        assert curl(f"http://127.0.0.1:{proc.port}/").stdout == b"hello from apps.cli_apps\n"
        code, _, _, err = stop(proc)
        assert code == 0, err
        assert not os.path.exists(path), "unix socket left behind after a clean exit"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_two_tcp_binds_both_serve(ktlswsgi_cli):
    second = free_port()
    proc = ktlswsgi_cli("apps.cli_apps:app", "-b", f"127.0.0.1:{second}")
    for port in (proc.port, second):
        assert curl(f"http://127.0.0.1:{port}/").stdout == b"hello from apps.cli_apps\n"
    code, _, _, err = stop(proc)
    assert code == 0, err


def test_port_in_use_exits_1_with_one_line_naming_the_address():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run_cli("-b", f"127.0.0.1:{port}", "apps.cli_apps:app")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0].lower()


def test_second_bind_in_use_releases_the_first_and_exits_1():
    first = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run_cli("-b", f"127.0.0.1:{first}", "-b", f"127.0.0.1:{port}", "apps.cli_apps:app")
    assert r.returncode == 1
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], r.stderr
    # The first address was released: it can be bound again at once.
    with socket.socket() as again:
        again.bind(("127.0.0.1", first))


# -- bad flags: one line, exit 1 (as for any bad input) --------------------------------------------
BAD_FLAGS = [
    pytest.param(["--foo"], "unrecognized argument --foo", id="unknown-flag"),
    pytest.param(["--foo", "--bar"], "unrecognized arguments --foo --bar", id="two-unknown-flags"),
    pytest.param(["--threads", "many"], "argument --threads: 'many' is not a whole number",
                 id="bad-int"),
    pytest.param(["--max-body", "12q"], "argument --max-body: '12q' is not a size", id="bad-size"),
    pytest.param(["--tls-min-version", "1.1"], "argument --tls-min-version: '1.1': use 1.2, 1.3",
                 id="bad-choice"),
    pytest.param(["--threads"], "argument --threads: expected one argument", id="missing-value"),
]


@pytest.mark.parametrize("args,expected", BAD_FLAGS)
def test_bad_flag_exits_1_with_one_line_and_a_help_hint(args, expected):
    r = run_cli("apps.cli_apps:app", *args)
    assert r.returncode == 1, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert line.startswith(f"ktlswsgi: error: {expected}"), line
    assert line.endswith(" (see ktlswsgi --help)"), line
    assert "usage:" not in r.stderr and r.stdout == ""


def test_missing_app_is_one_line_with_a_help_hint():
    r = run_cli("-b", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert error_lines(r.stderr) == [
        "ktlswsgi: error: the APP argument is required (see ktlswsgi --help)"], r.stderr


# -- the generated development certificate --------------------------------------------------------
def _unwritable_cache(tmp_path, kind: str) -> str:
    """A cache path no user can create (tests run as root, where modes do not stop writes)."""
    if kind == "under-a-file":       # mkdir fails with ENOTDIR
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        return str(blocker / "cache")
    if kind == "under-proc":         # procfs refuses new directories
        return "/proc/ktlswsgi-test-cache"
    if os.geteuid() == 0:            # "read-only": mode 0555 binds only non-root users
        pytest.skip("root writes into a 0555 directory")
    ro = tmp_path / "read-only"
    ro.mkdir(mode=0o555)
    return str(ro)


@pytest.mark.parametrize("kind", ["under-a-file", "under-proc", "mode-0555"])
def test_tls_with_an_unwritable_cache_serves_a_fresh_certificate(ktlswsgi_cli, tmp_path, kind):
    cache = _unwritable_cache(tmp_path, kind)
    env = {"HOME": cache, "XDG_CACHE_HOME": cache, **private_tmpdir(tmp_path)}
    proc = ktlswsgi_cli("ktlswsgi.demo:app", "--tls", env=env)
    # The pair was loaded before listening; its temporary files are gone already.
    assert os.listdir(env["TMPDIR"]) == []
    r = curl("-k", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{proc.port}/")
    assert r.stdout == b"200"
    code, _, _, err = stop(proc)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "[WARNING]" in line]
    assert any("self-signed" in w and "development" in w.lower() for w in warnings), err
    assert any(os.path.join(cache, "ktlswsgi", "selfsigned") in w and "every start" in w
               for w in warnings), err
    assert "[ERROR]" not in err and "Traceback" not in err
    assert os.listdir(env["TMPDIR"]) == []


def test_tls_with_a_writable_cache_does_not_mention_it(ktlswsgi_cli, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = ktlswsgi_cli("ktlswsgi.demo:app", "--tls", env=env)
    curl("-k", f"https://127.0.0.1:{proc.port}/")   # serving: past start-up and its log lines
    code, _, _, err = stop(proc)
    assert code == 0, err
    assert str(tmp_path / "cache") in err and "every start" not in err


NOT_COVERED = "only covers localhost, 127.0.0.1 and ::1"


def _extra_bind(kind: str, tmp_path) -> str:
    if kind == "unix":
        return f"unix:{tmp_path / 's.sock'}"
    if kind.startswith("ipv6"):
        if not ipv6_loopback_available():
            pytest.skip("IPv6 is not available on this host")
        return f"[{'::' if kind == 'ipv6-any' else '::1'}]:{free_port6()}"
    return f"{'0.0.0.0' if kind == 'ipv4-any' else 'localhost'}:{free_port()}"


@pytest.mark.parametrize("kind,warned", [
    ("ipv4-any", True), ("ipv6-any", True),
    ("ipv6-loopback", False), ("localhost", False), ("unix", False),
])
def test_generated_certificate_warns_when_served_beyond_loopback(ktlswsgi_cli, tmp_path, kind,
                                                                 warned):
    bind = _extra_bind(kind, tmp_path)
    proc = ktlswsgi_cli("ktlswsgi.demo:app", "--tls", "-b", bind,
                        env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    curl("-k", f"https://127.0.0.1:{proc.port}/")   # serving: past start-up and its log lines
    code, _, _, err = stop(proc)
    assert code == 0, err
    lines = [line for line in err.splitlines() if NOT_COVERED in line]
    if warned:
        assert len(lines) == 1 and "[WARNING]" in lines[0] and bind in lines[0], err
        assert f"127.0.0.1:{proc.port}" not in lines[0]   # the loopback bind is covered
    else:
        assert lines == [], err


def test_a_given_certificate_on_a_public_bind_gets_no_coverage_warning(ktlswsgi_cli, tmp_path):
    from ktlswsgi.tls.selfsigned import ensure_selfsigned
    cert, key = ensure_selfsigned(str(tmp_path / "pair"))
    proc = ktlswsgi_cli("ktlswsgi.demo:app", "--certfile", cert, "--keyfile", key,
                        "-b", f"0.0.0.0:{free_port()}")
    curl("-k", f"https://127.0.0.1:{proc.port}/")   # serving: past start-up and its log lines
    code, _, _, err = stop(proc)
    assert code == 0, err
    assert NOT_COVERED not in err and "self-signed" not in err


def test_certfile_without_a_key_says_no_private_key_was_found(tmp_path):
    from ktlswsgi.tls.selfsigned import generate_pem
    cert_only = tmp_path / "c2.pem"
    cert_only.write_bytes(generate_pem()[0])
    r = run_cli("ktlswsgi.demo:app", "-b", f"127.0.0.1:{free_port()}", "--certfile", str(cert_only))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert f"cannot load keyfile '{cert_only}': no private key found in it" in lines[0], lines[0]
    assert "--keyfile" in lines[0] and "unsupported" not in lines[0]
