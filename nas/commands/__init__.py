"""Subcommands of the nas CLI."""
