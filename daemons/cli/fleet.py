"""`fleet`: one command for the whole system on this machine.

    fleet up ...    the system with a simulated fleet and the live scenario (daemons.cli.up)
    fleet sim ...   the fleet simulator alone, pointed at any broker (python -m daemons.sim)
"""

from __future__ import annotations

import os
import sys

USAGE = "usage: fleet {up,sim} [options]   (fleet up --help, fleet sim --help)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "up":
        from daemons.cli.up import main as up

        return up(rest)
    if command == "sim":
        # The simulator is an application of its own (the layers keep cli and sim apart): run it as
        # its module, in this process.
        os.execv(sys.executable, [sys.executable, "-m", "daemons.sim", *rest])
    print(f"fleet: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
