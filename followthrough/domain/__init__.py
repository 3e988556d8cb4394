"""The domain: the task's lifecycle, the contracts between workflows and activities, policies, names, and the
rules task-type payloads and agent tools are checked by. Pure code (no I/O, no clock): the only project code the
workflows import, so the sandbox passes through nothing else of ours.
"""
