"""The HTTP façade: starts tasks, takes decisions, reads the mirror."""
