"""Drivers run instances: `sim` (deterministic, fake clock), `local` (child processes)."""
