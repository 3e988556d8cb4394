"""Deterministic orchestration only: no I/O, no clock, no randomness, no DB models."""

from workflows.task import TaskWorkflow

ALL_WORKFLOWS = [TaskWorkflow]
