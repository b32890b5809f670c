"""What the command-line tools share: a user error is one line on stderr and exit status 2.

Argument errors (argparse) print "PROG: error: ... (see --help)"; the tools catch their
own input errors and print "error: ..." with the file, video or setting concerned.
"""
from __future__ import annotations

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error in one line instead of the usage block plus the error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def one_line(message) -> str:
    return " ".join(str(message).split())


def fail(error) -> int:
    """Print error as one line on stderr; the exit status of a user error."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    return 2
