"""setuptools entry for the compiled part: the cffi OpenSSL binding.

All metadata lives in pyproject.toml; this file only adds ``cffi_modules``
so that ``pip install .`` / ``pip install -e .`` compiles
``ktlswsgi.tls._openssl`` (needs gcc and the OpenSSL 3 headers, e.g. Debian
``libssl-dev``).
"""
from setuptools import setup

setup(cffi_modules=["ktlswsgi/tls/_build.py:ffibuilder"])
