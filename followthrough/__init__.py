"""followthrough: durable task engine for AI-assisted business work.

This package is the shared core that the API, the worker and the workflows all
import: settings, the task lifecycle vocabulary, workflow/activity contracts,
the SQL mirror tables and the task type registry.
"""
