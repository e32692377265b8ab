"""A module whose import fails: a dependency that is not installed."""
import ktlswsgi_missing_dependency_xyz  # noqa: F401


def app(environ, start_response):  # pragma: no cover - never reached
    raise AssertionError
