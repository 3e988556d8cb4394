"""What `followthrough --help` and `--version` print, as a person sees them in a separate process: the commands
in three groups, each listed once; the values of every enumerated option; the installed version."""

import re
from enum import Enum
from importlib.metadata import version

from followthrough.domain.lifecycle import Priority, TaskMode, TaskStatus
from followthrough.services.task_queries import TaskOrder
from tests.helpers import free_port
from tests.cli.test_cli_decisions import cli

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def panels(help_text: str) -> dict[str, list[str]]:
    """Each of the help's boxes (title -> the names in its first column, in order)."""
    found: dict[str, list[str]] = {}
    title = None
    for line in _ANSI.sub("", help_text).splitlines():
        if match := re.match(r"╭─ (.+?) ─", line):
            title = match[1]
            found[title] = []
        elif line.startswith("╰"):
            title = None
        elif title and (name := re.match(r"│ (?:\* +)?(-?-?[a-z][\w-]*)", line)):
            found[title].append(name[1])
    return found


def listed(values: type[Enum]) -> str:
    names = [v.value for v in values]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def flat(help_text: str) -> str:
    """The help's text with its boxes and line breaks taken out, so a wrapped list reads in one piece."""
    return " ".join(_ANSI.sub("", help_text).replace("│", " ").split())


async def test_version_prints_the_installed_one():
    done = await cli("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"followthrough {version('followthrough')}\n", "")


async def test_help_groups_the_commands_as_people_use_them_each_once():
    done = await cli("--help")
    assert done.returncode == 0, done.stderr
    found = panels(done.stdout)
    assert list(found) == ["Options", "Running", "Tasks, definitions and approvals", "Administration"]
    assert found["Running"] == ["dev", "api", "worker", "migrate", "worker-health"]
    assert found["Tasks, definitions and approvals"] == ["tasks", "types", "status", "definitions", "schedules"]
    assert found["Administration"] == ["keys", "reconcile", "temporal", "connectors"]
    assert "--version" in found["Options"]

    # `approve`, `reject` and `show` are listed under `tasks` alone; the old spellings still run.
    tasks = panels((await cli("tasks", "--help")).stdout)
    assert tasks == {"Options": ["--help"], "Tasks": ["create", "list", "show", "events", "cancel", "retry"],
                     "Approvals": ["approve", "reject"]}
    for old in ("approve", "reject", "show"):
        assert (await cli(old, "--help")).returncode == 0
    bare = await cli()
    assert bare.returncode == 2 and "Running" in bare.stdout  # no command: the help, as a usage error


async def test_enumerated_options_show_their_values_and_refuse_others():
    listing = flat((await cli("tasks", "list", "--help")).stdout)
    assert f"only tasks in this status (repeatable): {listed(TaskStatus)}" in listing
    assert f"--order ORDER {listed(TaskOrder)}" in listing  # the orders the API knows
    creating = flat((await cli("tasks", "create", "--help")).stdout)
    assert f"--mode MODE {listed(TaskMode)} (default: the type's)" in creating
    assert f"--priority PRIORITY {listed(Priority)}" in creating

    for usage, option in ((["tasks", "list", "--status", "nonsense"], "--status"),
                          (["tasks", "list", "--order", "alphabetical"], "--order"),
                          (["tasks", "create", "--type", "x", "--payload", "{}", "--mode", "yolo"], "--mode"),
                          (["tasks", "create", "--type", "x", "--payload", "{}", "--priority", "asap"], "--priority")):
        refused = await cli(*usage)
        assert refused.returncode == 2 and option in refused.stderr, (usage, refused.stderr)

    # The names the API takes for a mode and a priority, in any case, pass to it (here: an API not running).
    dead = f"http://127.0.0.1:{free_port()}"
    taken = await cli("tasks", "create", "--type", "x", "--payload", "{}", "--mode", "Semi_Automated",
                      "--priority", "HIGH", "--api", dead)
    assert taken.returncode == 2 and "cannot reach" in taken.stderr, taken.stderr
