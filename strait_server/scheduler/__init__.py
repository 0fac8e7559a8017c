"""Scheduler role: sweeps that keep the queue honest (lease recovery, delayed promotion)."""
