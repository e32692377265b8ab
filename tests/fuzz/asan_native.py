"""pytest plugin (`-p asan_native`): the tests run on the extension at
KTLSWSGI_NATIVE_SO (scripts/fuzz.sh's AddressSanitizer build) in place of the
normal build.  Loaded before ktlswsgi is imported, so that `ktlswsgi.native`
finds this module under its name."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

_path = os.environ["KTLSWSGI_NATIVE_SO"]
_loader = importlib.machinery.ExtensionFileLoader("ktlswsgi._native", _path)
_spec = importlib.util.spec_from_file_location("ktlswsgi._native", _path, loader=_loader)
_module = importlib.util.module_from_spec(_spec)
_loader.exec_module(_module)
sys.modules["ktlswsgi._native"] = _module


def pytest_report_header(config):
    return f"ktlswsgi._native under test: {_path}"
