"""The ``usermgmt`` command line (``python -m usermgmt``).

Database, worker and audit commands arrive with their issues; this module keeps
the entry point and the rule that errors print one readable line, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from usermgmt.errors import UserMgmtError


def _parser() -> argparse.ArgumentParser:
    from usermgmt import __version__

    parser = argparse.ArgumentParser(prog="usermgmt", description="usermgmt administration")
    parser.add_argument("--version", action="version", version=f"usermgmt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-config", help="validate the settings read from the environment")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            from usermgmt.config import Settings

            settings = Settings()
            print(f"settings are valid (environment={settings.environment})")
            return 0
    except UserMgmtError as exc:
        print(f"usermgmt: error: {exc.detail}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands
