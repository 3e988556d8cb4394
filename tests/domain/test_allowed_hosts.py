"""Host allow-lists (followthrough/domain/allowed_hosts.py) and the mode order subtasks are held to
(followthrough/domain/lifecycle.py): pure functions, no servers."""

import pytest

from followthrough.domain import allowed_hosts
from followthrough.domain.agent_tools import out_of_bounds
from followthrough.domain.lifecycle import TaskMode


def test_entries_are_host_names_wildcards_or_addresses():
    assert allowed_hosts.parse(["API.Example.com.", "*.corp.example", "127.0.0.1", "[::1]", "api.example.com"]) == [
        "api.example.com", "*.corp.example", "127.0.0.1", "::1"]
    for bad in ("http://example.com/", "example.com/path", "exa mple.com", "", "*.", "host:8080"):
        with pytest.raises(ValueError, match="is not a host; list host names"):
            allowed_hosts.parse([bad])


def test_a_host_is_allowed_only_when_every_list_that_is_set_allows_it():
    hosts = ["api.example.com", "*.corp.example", "10.0.0.1"]
    assert allowed_hosts.allows(hosts, "API.example.com")
    assert allowed_hosts.allows(hosts, "crm.corp.example") and not allowed_hosts.allows(hosts, "corp.example")
    assert not allowed_hosts.allows(hosts, "evilcorp.example") and not allowed_hosts.allows(hosts, "10.0.0.2")
    assert allowed_hosts.refusal("https://api.example.com/x", hosts, None) is None
    assert allowed_hosts.refusal("https://api.example.com/x", hosts, ["other.example"]) == (
        "api.example.com is not one of this agent's allowed hosts (other.example)")
    assert allowed_hosts.refusal("https://api.example.com/x", []) == (
        "api.example.com is not one of this agent's allowed hosts (none)")
    # Userinfo does not pass for the host.
    assert allowed_hosts.refusal("https://api.example.com@evil.example/", hosts) is not None


def test_a_mode_is_lowered_to_the_ceiling_never_raised():
    # One order: manual and suggest (a person sends), review (sends after each approval), assisted, autonomous.
    order = [TaskMode.MANUAL, TaskMode.REVIEW, TaskMode.ASSISTED, TaskMode.AUTONOMOUS]
    for i, ceiling in enumerate(order):
        for j, mode in enumerate(order):
            assert mode.no_looser_than(ceiling) is (mode if j <= i else ceiling)
    assert TaskMode.SUGGEST.no_looser_than(TaskMode.MANUAL) is TaskMode.SUGGEST
    assert TaskMode.MANUAL.no_looser_than(TaskMode.SUGGEST) is TaskMode.MANUAL
    assert TaskMode.REVIEW.no_looser_than(TaskMode.SUGGEST) is TaskMode.SUGGEST
    assert TaskMode.AUTONOMOUS.no_looser_than(TaskMode.ASSISTED) is TaskMode.ASSISTED


def test_calls_outside_the_payload_are_out_of_bounds():
    payload = {"allowed_hosts": ["api.example.com"], "subtask_types": ["email"]}
    assert out_of_bounds(payload, "http_request", {"url": "https://api.example.com/a", "method": "GET"}) is None
    assert out_of_bounds(payload, "http_request", {"url": "https://x.example/a"}).startswith("refused: x.example")
    assert out_of_bounds(payload, "fetch_and_extract", {"html": "<p/>", "fields": {}}) is None
    assert out_of_bounds(payload, "create_subtask", {"type": "webhook", "title": "t", "payload": {}}) == (
        "refused: this agent may not create 'webhook' tasks; allowed: email")
    assert out_of_bounds({"subtask_types": ["email"]}, "http_request", {"url": "https://x.example/"}) is None
