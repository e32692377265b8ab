"""Every setting declared once (ktlswsgi/settings.py): the command line, the
config file, the environment, Config and docs/settings.md all come from it."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from ktlswsgi import cli, settings
from ktlswsgi.config import Config, ConfigError
from ktlswsgi.settings import SETTINGS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(*args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("KTLSWSGI_")}
    e["PYTHONPATH"] = HERE + os.pathsep + os.environ.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ktlswsgi", *args], capture_output=True,
                          text=True, timeout=60, env=e, cwd=cwd)


def test_docs_settings_page_is_generated_from_the_table():
    with open(os.path.join(ROOT, "docs", "settings.md")) as f:
        assert f.read() == settings.markdown(), \
            "docs/settings.md is stale: python -m ktlswsgi.settings > docs/settings.md"


def test_every_config_field_is_a_setting_or_derived_from_one():
    derived = {"binds", "keyfile_password", "user_name", "uid", "gid", "_proxy_trust"}
    fields = {f.name for f in dataclasses.fields(Config)}
    assert fields == {s.field for s in SETTINGS} | derived
    assert len({s.long_flag for s in SETTINGS}) == len(SETTINGS)
    for s in SETTINGS:   # one vocabulary: the flag is the name, the field adds the unit
        assert s.flag or s.long_flag == "--" + s.name.replace("_", "-")
        assert s.field.startswith(s.name)


def test_every_flag_in_help():
    text = run("--help").stdout
    for s in SETTINGS:
        if not s.positional:
            assert s.long_flag in text, s.name


def test_sources_and_their_precedence(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 3\nkeepalive = 7\nthreads = 9\nmax_body = '1m'\n"
                    "bind = '0.0.0.0:9000'\n")
    env = {"KTLSWSGI_THREADS": "11", "WEB_CONCURRENCY": "5", "KTLSWSGI_BODY_BUFFER": "128k"}
    _, values = cli.gather(["-c", str(conf), "m:app", "--threads", "12"], environ=env)
    cfg = cli.config_from_values(values)
    assert cfg.workers == 3               # the config file over WEB_CONCURRENCY (a default)
    assert cfg.keep_alive_s == 7.0        # gunicorn's name for it
    assert cfg.threads == 12              # the flag over the environment over the file
    assert cfg.max_body_bytes == 1024 * 1024 and cfg.body_buffer_bytes == 128 * 1024
    assert [str(b) for b in cfg.binds] == ["0.0.0.0:9000"]
    _, values = cli.gather(["m:app"], environ={"WEB_CONCURRENCY": "5",
                                               "KTLSWSGI_MAX_BODY": "2m"})
    cfg = cli.config_from_values(values)
    assert cfg.workers == 5 and cfg.max_body_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize("text,message", [
    ("def post_fork(server, worker):\n    pass\n",
     "'post_fork' is a server hook ktlswsgi does not run"),
    ("worker_class = 'gevent'\n",
     "unknown setting 'worker_class' (a gunicorn setting ktlswsgi does not have)"),
    ("wokers = 4\n", "unknown setting 'wokers'"),
    ("workers = 'four'\n", "workers: 'four' is not a whole number"),
    ("threads = 0\n", "threads: 0: must be >= 1"),
])
def test_a_config_file_that_names_what_does_not_run_is_an_error(tmp_path, text, message):
    conf = tmp_path / "conf.py"
    conf.write_text(text)
    r = run("-c", str(conf), "m:app")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("ktlswsgi: error: --config ") and message in r.stderr, r.stderr


def test_environment_typos_are_errors_and_values_are_checked():
    r = run("m:app", env={"KTLSWSGI_WOKERS": "4"})
    assert r.returncode == 1 and "unknown setting KTLSWSGI_WOKERS (did you mean " \
        "KTLSWSGI_WORKERS?)" in r.stderr, r.stderr
    r = run("m:app", env={"KTLSWSGI_WORKERS": "lots"})
    assert r.returncode == 1 and "KTLSWSGI_WORKERS: 'lots' is not a whole number" in r.stderr


def test_print_config_round_trips_through_a_config_file(tmp_path):
    r = run("--print-config", "apps.log_apps:app", "-w", "3", "--max-body", "5m",
            "--no-http2", env={"KTLSWSGI_KEEP_ALIVE": "9"})
    assert r.returncode == 0, r.stderr
    assert "workers = 3" in r.stdout and "keep_alive = 9.0" in r.stdout
    assert "max_body = 5242880" in r.stdout and "http2 = False" in r.stdout
    conf = tmp_path / "printed.py"
    conf.write_text(r.stdout)
    _, values = cli.gather(["-c", str(conf)], environ={})
    again = cli.config_from_values(values)
    assert (again.workers, again.keep_alive_s, again.max_body_bytes, again.http2) == (
        3, 9.0, 5 * 1024 * 1024, False)


def test_print_config_flag_alone_prints(tmp_path):
    r = run("--print-config", "apps.log_apps:app")
    assert r.returncode == 0 and r.stdout.startswith("# ktlswsgi settings"), r.stderr


def test_check_config_exits_0_or_1_without_serving(tmp_path):
    ok = run("--check-config", "apps.log_apps:app", "-b", "127.0.0.1:1")
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout
    bad_app = run("--check-config", "apps.no_such_module:app")
    assert bad_app.returncode == 1 and "cannot import module" in bad_app.stderr
    bad_cert = run("--check-config", "apps.log_apps:app", "--certfile", str(tmp_path / "none"))
    assert bad_cert.returncode == 1 and bad_cert.stderr.count("\n") == 1, bad_cert.stderr


def test_config_checks_its_settings_directly():
    with pytest.raises(ConfigError, match=r"^--threads: 0: must be >= 1"):
        Config(threads=0).validate()
    with pytest.raises(ConfigError, match=r"^--tls-transport: 'kernel': use auto, socket"):
        Config(tls_transport="kernel").validate()
    cfg = Config(certfile="c.pem", bind=["[::1]:8443", "unix:/tmp/s"], high_water_bytes=4096)
    assert cfg.tls and cfg.low_water_bytes == 1024
    assert [b.family for b in cfg.binds] == ["tcp", "unix"]
    assert cfg.replace(workers=4).binds == cfg.binds
