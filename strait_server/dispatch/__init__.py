"""Dispatch: the claim loop, the HTTP executor, retry decisions, the settle buffer."""
