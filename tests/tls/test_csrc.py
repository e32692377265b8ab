"""ktlswsgi's own C (ktlswsgi/tls/_csrc/) compiles cleanly under the strict
warning set the build names, with warnings as errors, each file on its own
(the header is self-sufficient), and the extension in use exports what the
header declares."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest

from ktlswsgi.tls.binding import lib

_BUILD = os.path.join(os.path.dirname(__file__), "..", "..", "ktlswsgi", "tls", "_build.py")


def _build_module():
    spec = importlib.util.spec_from_file_location("_ktlswsgi_build_for_test", _BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_module()


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("name", BUILD.C_SOURCES)
def test_c_source_compiles_with_warnings_as_errors(tmp_path, name):
    cmd = ["gcc", "-std=gnu11", "-O2", "-c", "-Werror", *BUILD.C_WARNINGS,
           "-I", BUILD.CSRC, os.path.join(BUILD.CSRC, name), "-o", str(tmp_path / "x.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_extension_exports_the_engine():
    names = ["Ktlswsgi_mem_send_out", "Ktlswsgi_mem_fill_in", "Ktlswsgi_mem_flush",
             "Ktlswsgi_mem_read", "Ktlswsgi_mem_write", "Ktlswsgi_mem_pread_write",
             "Ktlswsgi_mem_has_pending", "Ktlswsgi_password_cb", "Ktlswsgi_alpn_select_cb",
             "Ktlswsgi_CTX_set_alpn_select", "Ktlswsgi_watch_key_update"]
    assert [n for n in names if not hasattr(lib, n)] == []
