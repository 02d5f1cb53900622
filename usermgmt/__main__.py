"""``python -m usermgmt``: the command-line interface."""

from usermgmt.cli import main

raise SystemExit(main())
