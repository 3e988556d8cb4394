"""Deterministic orchestration only: no I/O, no clock, no randomness, no DB models.

Kept empty on purpose: the workflow sandbox re-imports a workflow's package
for every run, so anything imported here is paid for on every task.
The worker's list of workflows is in followthrough/workflows/all.py.
"""
