"""setuptools entry for the compiled parts: the cffi OpenSSL binding and the
C HTTP/1 head parser.

All metadata lives in pyproject.toml; this file only adds ``cffi_modules``
(``ktlswsgi.tls._openssl``: needs gcc and the OpenSSL 3 headers, e.g. Debian
``libssl-dev``) and ``ext_modules`` (``ktlswsgi._native``, plain C against
the Python headers: it builds the request's Python objects itself, which a
cffi function cannot).  ``pip install .`` / ``pip install -e .`` compiles both.
"""
from setuptools import Extension, setup

# Our own C is held to these (tests/test_native.py compiles it with -Werror).
NATIVE_SOURCES = ["native.c", "h1parse.c", "environ.c", "framing.c", "respheaders.c",
                  "gate.c"]
C_WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Wformat=2"]

setup(
    cffi_modules=["ktlswsgi/tls/_build.py:ffibuilder"],
    ext_modules=[Extension("ktlswsgi._native",
                           [f"ktlswsgi/_csrc/{name}" for name in NATIVE_SOURCES],
                           include_dirs=["ktlswsgi/_csrc", "ktlswsgi/tls/_csrc"], extra_compile_args=C_WARNINGS)],
)
