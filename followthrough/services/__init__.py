"""The operations behind the API and the worker's activities, free of HTTP: creating tasks, running
definitions, idempotency, limits, task queries, schedule sync and decisions. They refuse with
followthrough/services/errors.py, which the API answers as HTTP (followthrough/api/errors.py)."""
