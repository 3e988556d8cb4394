"""Every workflow the worker registers."""

from workflows.definition_run import DefinitionRunWorkflow
from workflows.task import TaskWorkflow

ALL_WORKFLOWS = [TaskWorkflow, DefinitionRunWorkflow]
