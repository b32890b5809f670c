"""Per-test results from a pytest -v log, also one still being written or cut off by a kill.

bench/gpu_check.sh reads its test phase's live log with this, so that a phase stopped by its
time cap still names what passed and what failed (the JUnit XML is written only at the end).
It understands the three shapes a result takes in a -v log:

    tests/test_a.py::test_b PASSED                        [ 10%]   (one process)
    [gw3] [ 10%] FAILED tests/test_a.py::test_b                    (pytest-xdist)
    FAILED tests/test_a.py::test_b - AssertionError: ...           (the -rfE summary)

A test's last word counts (an ERROR in teardown after PASSED is a failure); a test started but
never reported (the one running when the phase was stopped) is listed as unfinished.

    python bench/pytest_log.py LOG    # prints "passed N, failed M, skipped K, unfinished U", then one line per failure
"""
from __future__ import annotations

import re
import sys

_ID = r"(tests/\S+?\.py::\S+)"
_WORD = r"(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)"
_PATTERNS = [
    re.compile(rf"^(?:\[gw\d+\] \[\s*\d+%\] ){_WORD} {_ID}"),   # xdist -v
    re.compile(rf"^{_ID} {_WORD}\b"),                           # one process -v
    re.compile(rf"^{_WORD} {_ID}(?: - |$)"),                    # -rfE summary
]
_STARTED = re.compile(rf"^{_ID}(?: |$)")                        # one process: the id printed before its result
_WORDS = {"PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"}
_FAILING = {"FAILED", "ERROR", "XPASS"}


def results(text: str) -> tuple[dict[str, str], list[str]]:
    """({test id: last result word}, ids started but never reported), in the log's order."""
    last: dict[str, str] = {}
    started: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        for pat in _PATTERNS:
            m = pat.match(line)
            if m:
                a, b = m.groups()
                word, tid = (a, b) if a in _WORDS else (b, a)
                if word == "PASSED" and last.get(tid) in _FAILING:
                    break  # a summary's PASSED never undoes a failure
                last[tid] = word
                break
        else:
            m = _STARTED.match(line)
            if m:
                started.append(m.group(1))
    unfinished = [t for t in dict.fromkeys(started) if t not in last]
    return last, unfinished


def summary(text: str) -> tuple[str, list[str]]:
    """('passed N, failed M, skipped K, unfinished U', ['FAILED id', ...])."""
    last, unfinished = results(text)
    n = {w: sum(1 for v in last.values() if v == w) for w in ("PASSED", "SKIPPED", "XFAIL")}
    failing = [f"{w} {t}" for t, w in last.items() if w in _FAILING]
    failing += [f"UNFINISHED {t}" for t in unfinished]
    xfailed = f", xfailed {n['XFAIL']}" if n["XFAIL"] else ""
    head = (f"passed {n['PASSED']}, failed {len(failing) - len(unfinished)}, skipped {n['SKIPPED']}"
            f"{xfailed}, unfinished {len(unfinished)}")
    return head, failing


def main(argv: list[str]) -> int:
    try:
        text = open(argv[1], errors="replace").read()
    except (IndexError, OSError) as e:
        print(f"no log ({e})")
        return 0
    head, failing = summary(text)
    print(head)
    for f in failing:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
