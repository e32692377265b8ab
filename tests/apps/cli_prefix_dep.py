"""A module that imports a missing module whose name is a string prefix of its own.

`apps.cli_prefix` does not exist; the loader must blame it, not this module.
"""
import apps.cli_prefix  # noqa: F401


def app(environ, start_response):  # pragma: no cover - never reached
    raise AssertionError
