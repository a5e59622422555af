"""The ``gradbal`` console command.

``gradbal report ...`` draws figures from event files and needs neither Lightning nor
transformers, so it is dispatched before :mod:`gradbal.cli` (and with it Lightning) is imported;
every other subcommand goes to the LightningCLI.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of ``gradbal`` and ``python -m gradbal``."""
    if sys.argv[1:2] == ["report"]:
        from gradbal.report import report_main

        sys.exit(report_main(sys.argv[2:]))
    from gradbal.cli import cli

    cli()
