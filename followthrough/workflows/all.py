"""Every workflow the worker registers."""

from followthrough.workflows.definition_run import DefinitionRunWorkflow
from followthrough.workflows.task import TaskWorkflow

ALL_WORKFLOWS = [TaskWorkflow, DefinitionRunWorkflow]
