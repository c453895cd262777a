"""`lmlab train ...`: argument parsing only; the work is done by lmlab.train."""

from __future__ import annotations


def register(sub, common) -> None:
    """Add this area's subcommands to the top-level subparsers (called by lmlab.cli.main)."""
