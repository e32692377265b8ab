"""Coverage-guided fuzzing of the C request-head parser (ktlswsgi/_csrc/h1parse.c)
against h11, the reference.

Each input: two bytes choose the four limits (small, so every limit is hit),
the rest is fed to two HTTP/1 drivers, `--http c` and `--http h11`, whole and
again with a blank line appended; the two must produce the same events
(tests/test_http1_parsers.py's transcript: requests, bodies, keep-alive,
rejections).  Any difference, and any memory error AddressSanitizer sees in
the C, stops the run with the input saved.

Run by scripts/fuzz.sh (`make fuzz`, and in CI), which builds the parser
with clang's address sanitizer and libFuzzer's coverage hooks and loads it in
place of the normal build (KTLSWSGI_H1PARSE_SO), seeds the corpus from the
test corpus, and bounds the run (-max_total_time).  By hand:

    python tests/fuzz/fuzz_h1parse.py -runs=20000
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# Instrumented before anything else imports them: coverage of the Python
# driver guides the fuzzer too.
with atheris.instrument_imports(include=["ktlswsgi"]):
    from ktlswsgi import http1
from test_http1_parsers import CORPUS, limits_from, transcript  # noqa: E402


def _load_sanitized_build() -> None:
    path = os.environ.get("KTLSWSGI_H1PARSE_SO")
    if not path:
        return
    loader = importlib.machinery.ExtensionFileLoader("ktlswsgi._h1parse", path)
    spec = importlib.util.spec_from_file_location("ktlswsgi._h1parse", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    http1._h1parse = module
    print(f"fuzz_h1parse: the parser under test is {path}", file=sys.stderr)


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    limits = limits_from(data[0], data[1])
    head = data[2:]
    for variant in (head, head + b"\r\n\r\n"):
        pieces = [len(variant)]
        ref = transcript("h11", variant, pieces, limits=limits)
        got = transcript("c", variant, pieces, limits=limits)
        if got != ref:
            raise AssertionError(f"--http c differs from h11 on {variant!r} with limits "
                                 f"{limits}:\nc:   {got}\nh11: {ref}")


def write_seeds(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for i, data in enumerate(CORPUS):
        with open(os.path.join(directory, f"corpus-{i:04d}"), "wb") as f:
            f.write(b"\xff\xff" + data)


def main() -> None:
    _load_sanitized_build()
    assert http1.parser_name("c") == "c"
    seeds = os.environ.get("KTLSWSGI_FUZZ_SEEDS")
    if seeds:
        write_seeds(seeds)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
