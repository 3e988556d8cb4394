"""Every workflow the worker registers."""

from workflows.task import TaskWorkflow

ALL_WORKFLOWS = [TaskWorkflow]
