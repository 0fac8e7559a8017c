"""Workflows: versioned DAGs of steps (definitions, their checks, and the expressions steps use)."""
