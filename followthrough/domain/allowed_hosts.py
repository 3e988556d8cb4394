"""Host lists, one syntax and one matcher for each: the hosts an agent's HTTP tools may reach (its payload's
``allowed_hosts``, and a tenant's ``FOLLOWTHROUGH_GUARDRAILS`` ``{"<tenant>": {"agent": {"allowed_hosts":
[...]}}}``), the hosts a task secret is bound to (followthrough/infra/task_secrets.py) and the names in
``FOLLOWTHROUGH_OUTBOUND_ALLOW`` (followthrough/infra/outbound.py).

A list only narrows: a host must be on every list that is set, and the SSRF guard (followthrough/infra/outbound.py)
still decides on the addresses a name resolves to. Entries are host names (``api.example.com``), wildcards for
subdomains (``*.example.com``, which does not match ``example.com`` itself) or IP addresses, matched against
the URL's host as written. Pure: the agent loop's workflow code checks calls with it.
"""

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

HOW_TO = "list host names (api.example.com), subdomain wildcards (*.example.com) or IP addresses"


def _normal(host: str) -> str:
    host = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def is_name_pattern(entry: str) -> bool:
    """A host name, or ``*.`` and one: labels of letters, digits, ``-`` and ``_``, at most 63 long."""
    label = entry.removeprefix("*.")
    return bool(label) and all(part and len(part) <= 63 and part.replace("-", "").replace("_", "").isalnum()
                               for part in label.split("."))


def parse(entries: Iterable[str]) -> list[str]:
    """The entries, normalised; ValueError names the first that is not a host."""
    hosts: list[str] = []
    for raw in entries:
        entry = _normal(str(raw))
        try:
            ipaddress.ip_address(entry)
        except ValueError:
            if not is_name_pattern(entry):
                raise ValueError(f"{raw!r} is not a host; {HOW_TO}") from None
        hosts.append(entry)
    return list(dict.fromkeys(hosts))


def allows(entries: Iterable[str], host: str) -> bool:
    host = _normal(host)
    for entry in entries:
        entry = _normal(entry)
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def host_of(url: str) -> str:
    try:
        return urlsplit(str(url)).hostname or ""
    except ValueError:
        return ""


def refusal(url: str, *lists: list[str] | None) -> str | None:
    """Why ``url`` is outside the lists that are set (None: no list), or None when every one allows it."""
    host = host_of(url)
    for hosts in lists:
        if hosts is not None and not allows(hosts, host):
            listed = ", ".join(hosts) or "none"
            return f"{host or url} is not one of this agent's allowed hosts ({listed})"
    return None


def parse_allow(entries: Iterable[str]) -> tuple[tuple[Network, ...], frozenset[str]]:
    """Allowlist entries (``FOLLOWTHROUGH_OUTBOUND_ALLOW``) as networks and host names; raises ValueError on an
    entry that is neither."""
    networks: list[Network] = []
    names: set[str] = set()
    for raw in entries:
        entry = raw.strip().lower()
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if not is_name_pattern(entry):
            raise ValueError(f"{raw!r} is neither an address, a network (CIDR) nor a host name")
        names.add(entry.rstrip("."))
    return tuple(networks), frozenset(names)
