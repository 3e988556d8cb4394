"""Registering the task's search attributes in a namespace (`followthrough temporal setup`, the dev stack, tests):
the keys themselves are domain (followthrough/domain/search_attributes.py)."""

from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from followthrough.domain.search_attributes import ALL

_INDEXED_TYPES: dict[str, Any] = {"Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}


class SearchAttributeConflict(RuntimeError):
    """A name is registered already, with another type."""


async def register(client: Client, namespace: str) -> tuple[list[str], list[str]]:
    """Register the attributes in ``namespace``; (added, already there). Safe to repeat."""
    wanted = {key.name: _INDEXED_TYPES[key._metadata_type] for key in ALL}
    try:
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
        existing: dict[str, int] | None = dict(listed.custom_attributes)
    except RPCError as err:
        # The time-skipping test server cannot list them (UNIMPLEMENTED) but accepts additions.
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        existing = None
    present = [name for name in wanted if existing is not None and name in existing]
    for name in present:
        assert existing is not None
        if existing[name] != wanted[name]:
            kind = IndexedValueType.Name(existing[name]).removeprefix("INDEXED_VALUE_TYPE_").title()
            raise SearchAttributeConflict(f"search attribute {name} is registered as {kind}, not Keyword; "
                                          f"remove it (temporal operator search-attribute remove --name {name}) "
                                          f"or use another namespace")
    missing = {name: kind for name, kind in wanted.items() if name not in present}
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing))
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:  # registered meanwhile by another setup
                raise
    return sorted(missing), present
