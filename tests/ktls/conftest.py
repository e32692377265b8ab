"""The kTLS suite's gate, fixtures and end-of-run report.

The gate (decided once per run by ``_ktlskit.decide``):

  probe available                              -> the kTLS tests run
  probe unavailable, KTLSWSGI_IN_VM unset      -> every test skipped, with the probe's reason
  probe unavailable, KTLSWSGI_IN_VM=1          -> every kTLS test FAILS (the VM must have kTLS)
  KTLSWSGI_EXPECT_KTLS=unavailable             -> the kTLS tests are skipped; test_fallback.py
                                                  runs, and the probe must say unavailable
                                                  (the boot with module_blacklist=tls)

test_fallback.py is skipped in every other run.

The report: tests add tables and lines (the engagement matrix, the KeyUpdate
outcome, the syscall summary of a 100 MiB download); they are printed in the
terminal summary, so they show in `make ktls-smoke` without -s.
"""
import os

import pytest

from _ktlskit import Files, decide

HERE = os.path.dirname(os.path.abspath(__file__))
FALLBACK_FILE = "test_fallback.py"


def _kind(path) -> str:
    return "fallback" if os.path.basename(str(path)) == FALLBACK_FILE else "ktls"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not str(item.path).startswith(HERE + os.sep):
            continue
        action, reason = decide(_kind(item.path))
        if action == "skip":
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def ktls_gate(request):
    action, reason = decide(_kind(request.node.path))
    if action == "fail":
        pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="session")
def ktls_files(tmp_path_factory):
    """Files(dir).get(size) -> (path, sha256), made once per session (tmpfs in the VM)."""
    return Files(str(tmp_path_factory.mktemp("ktls-files")))


# -- the report at the end of the run -------------------------------------------------

class _Table:
    def __init__(self, title, header):
        self.title, self.header, self.rows, self.notes = title, list(header), [], []

    def lines(self):
        out = []
        if self.header:
            rows = [self.header] + [[str(c) for c in r] for r in self.rows]
            widths = [max(len(r[i]) for r in rows) for i in range(len(self.header))]

            def fmt(r):
                return "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
            out = [fmt(rows[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows[1:]]
        return out + self.notes


class Report:
    """``row(title, header, cells)`` adds a table row, ``note(title, line)`` a line."""

    def __init__(self):
        self.sections = {}

    def _table(self, title, header=()):
        if title not in self.sections:
            self.sections[title] = _Table(title, header)
        return self.sections[title]

    def row(self, title, header, cells):
        self._table(title, header).rows.append(list(cells))
        print("%s: %s" % (title, " | ".join(str(c) for c in cells)))

    def note(self, title, line):
        self._table(title).notes.append(line)
        print("%s: %s" % (title, line))


_REPORT = Report()


@pytest.fixture
def ktls_report():
    return _REPORT


def pytest_terminal_summary(terminalreporter):
    for table in _REPORT.sections.values():
        terminalreporter.write_sep("=", table.title)
        for line in table.lines():
            terminalreporter.write_line(line)
