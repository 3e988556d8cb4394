"""Paging of every list: ``limit`` and ``offset`` query parameters, one rule for the page size.

A ``limit`` over FOLLOWTHROUGH_PAGE_SIZE_MAX is clamped to it (the answer's ``limit`` says what was used),
never refused; no ``limit`` means FOLLOWTHROUGH_PAGE_SIZE_DEFAULT, or for a task's own events and
subtasks the maximum, so one page usually holds them all.
"""

from typing import Annotated

from fastapi import Query

from followthrough.config.settings import Settings

LimitQuery = Annotated[int | None, Query(ge=1, le=10**9, description="Capped at the configured maximum "
                                                                     "(FOLLOWTHROUGH_PAGE_SIZE_MAX).")]
OffsetQuery = Annotated[int, Query(ge=0, le=10**9)]


def page_size(settings: Settings, limit: int | None, default: int | None = None) -> int:
    return min(limit or default or settings.page_size_default, settings.page_size_max)


def next_offset(offset: int, limit: int, total: int) -> int | None:
    return offset + limit if offset + limit < total else None
