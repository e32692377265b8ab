"""Loading the application: "module:callable" or "module:factory()".

Owns: turning the APP string into a WSGI callable, with one clear error line
when that fails (the traceback is logged at debug level only).
"""
from __future__ import annotations

import importlib
import logging
import re
import sys

log = logging.getLogger("ktlswsgi.app")

_SPEC = re.compile(r"^(?P<module>[\w.]+):(?P<attr>[\w.]+)(?P<call>\(\))?$")


class AppLoadError(Exception):
    """The app cannot be loaded; the message is one line for the operator."""


def load_app(spec: str):
    match = _SPEC.match(spec.strip())
    if not match:
        raise AppLoadError(
            f"APP {spec!r} is not of the form 'module:callable' or 'module:factory()'")
    module_name, attr, call = match["module"], match["attr"], match["call"]
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        log.debug("import of %s failed", module_name, exc_info=True)
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise AppLoadError(f"cannot import module {module_name!r}: no such module") from None
        raise AppLoadError(f"error importing {module_name!r}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        log.debug("import of %s failed", module_name, exc_info=True)
        raise AppLoadError(f"error importing {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if call:
        try:
            obj = obj()
        except Exception as exc:
            log.debug("factory %s failed", spec, exc_info=True)
            raise AppLoadError(f"factory {spec!r} raised {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise AppLoadError(f"{spec!r} is not callable (got {type(obj).__name__})")
    return obj
