"""User ids that name who may decide a task, and their form in an approval's ``approvers_key``.

A queue matches ``"|alice|role:finance|"`` with LIKE, so an id holding the separator ``|`` could name two people
("bob|alice" shows in alice's queue) and one starting ``role:`` a team role. Such ids are refused wherever an
approver or a decider's id enters, and ``key_part`` stores any that got in before (older rows, events) in a form
no valid id can match.
"""

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

SEPARATOR = "|"
ROLE_PREFIX = "role:"
_ESCAPE = "\x1f"  # a control character: never in a valid id, so an escaped part cannot equal one
# An id that is an email address (its owner is written to): one mailbox, so none of the characters that list,
# quote or comment addresses in a header ("bob,x@acme.example" would be two recipients).
_MAILBOX = r"[^@\s,;:<>()\[\]\\\"]+"
EMAIL_PATTERN = rf"^{_MAILBOX}@{_MAILBOX}\.{_MAILBOX}$"


def problem(user_id: str) -> str | None:
    """Why ``user_id`` cannot name an approver, or None when it can."""
    for char in user_id:
        if char == SEPARATOR:
            return f"a user id may not contain the character {SEPARATOR!r} (it separates approvers)"
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"a user id may not contain the control character U+{ord(char):04X}"
    if user_id.startswith(ROLE_PREFIX):
        return f"a user id may not start with {ROLE_PREFIX!r} (approvers are user ids: name team roles in 'roles')"
    return None


def checked(user_id: str) -> str:
    """``user_id`` itself, or ValueError saying which character it may not hold."""
    if (why := problem(user_id)) is not None:
        raise ValueError(why)
    return user_id


# An approver's user id as a request names it: 1 to 128 characters, none of those ``problem`` refuses.
ApproverId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(checked)]


def key_part(user_id: str) -> str:
    """``user_id`` as it stands between separators in an approvers key: itself when valid; otherwise escaped
    (no separator left, and starting with a character no valid id holds), so it matches no valid id."""
    if problem(user_id) is None:
        return user_id
    return _ESCAPE + user_id.replace(_ESCAPE, _ESCAPE * 2).replace(SEPARATOR, _ESCAPE + "p")


def role_part(role: str) -> str:
    return ROLE_PREFIX + (role if problem(role) is None else key_part(role))
