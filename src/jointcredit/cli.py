"""The ``jointcredit`` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("jointcredit: CLI under construction")


if __name__ == "__main__":
    sys.exit(main())
