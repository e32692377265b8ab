"""The extension at KTLSWSGI_NATIVE_SO (scripts/fuzz.sh's AddressSanitizer
build) in place of the normal build, for whoever imports this module before
ktlswsgi: `ktlswsgi.native` then finds it under its name.  Imported by
fuzz_native.py, and a pytest plugin (`-p asan_native`) for the tests
fuzz.sh runs on that build."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

# The path of the extension loaded, or None (the normal build).
loaded = os.environ.get("KTLSWSGI_NATIVE_SO") or None

if loaded:
    _loader = importlib.machinery.ExtensionFileLoader("ktlswsgi._native", loaded)
    _spec = importlib.util.spec_from_file_location("ktlswsgi._native", loaded, loader=_loader)
    _module = importlib.util.module_from_spec(_spec)
    _loader.exec_module(_module)
    sys.modules["ktlswsgi._native"] = _module


def pytest_report_header(config):
    return f"ktlswsgi._native under test: {loaded or 'the normal build'}"
