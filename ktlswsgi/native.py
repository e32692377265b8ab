"""The compiled request-path helpers (ktlswsgi._native, built from _csrc/ by
pip install), or None where the extension is not built: every caller keeps
its Python path, which is also the reference the C is tested against."""
from __future__ import annotations

try:
    from . import _native as native
except ImportError:  # pragma: no cover - a source tree without the build
    native = None
