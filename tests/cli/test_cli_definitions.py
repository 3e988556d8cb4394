"""`followthrough definitions ...` and `followthrough schedules ...` as a person runs them: a separate
process talking to the API over real HTTP, with a worker behind it on the dev server."""

import uuid

from tests.helpers import eventually
from tests.cli.test_cli_decisions import Api, api, cli  # noqa: F401 - the fixture is used by name


async def test_definitions_and_schedules_from_the_command_line(api: Api):  # noqa: F811
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    created = await api.http.post("/definitions", json={
        "tenant_id": tenant, "name": "team-digest", "type": "email", "mode": "autonomous", "tags": ["digest"],
        "title": "Digest for {{ team }}", "variables": {"team": "sales"},
        "payload": {"to": ["{{ team }}@example.com"], "subject": "Digest", "body": "{{ lines | join(', ') }}"}})
    assert created.status_code == 201, created.text
    definition_id = created.json()["id"]

    missing = await cli("definitions", "run", definition_id, "--api", api.url)
    assert missing.returncode == 1 and "variables.lines" in missing.stderr

    ran = await cli("definitions", "run", definition_id, "--var", "team=support", "--json-var",
                    'lines=["one", "two"]', "--api", api.url, "--as", "dana")
    assert ran.returncode == 0, ran.stderr
    task_id = ran.stdout.split()[2].rstrip(":")
    task = await api.until(task_id, "completed")
    assert (task["title"], task["payload"]["body"], task["created_by"]) == ("Digest for support", "one, two", "dana")

    # Scheduled, it needs a default for every variable.
    scheduled = await api.http.patch(f"/definitions/{definition_id}", json={
        "cron": "0 3 1 1 *", "variables": {"team": "sales", "lines": ["x"]}})
    assert scheduled.status_code == 200, scheduled.text
    listed = await cli("definitions", "list", "--tenant", tenant, "--api", api.url)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "SCHEDULE", "TAGS"]
    assert row.split("  ") == [definition_id, "team-digest", "email", "0 3 1 1 * (UTC, active)", "digest"]

    paused = await cli("schedules", "pause", definition_id, "--note", "holidays", "--api", api.url)
    assert paused.returncode == 0, paused.stderr
    assert f"paused definition-{definition_id}" in paused.stdout and "paused: holidays" in paused.stdout
    assert (await cli("schedules", "resume", definition_id, "--api", api.url)).returncode == 0

    triggered = await cli("schedules", "trigger", definition_id, "--api", api.url)
    assert triggered.returncode == 0 and "triggered" in triggered.stdout, triggered.stderr
    runs = await eventually(lambda: api.http.get(f"/definitions/{definition_id}/runs"),
                            lambda r: r.json()["total"] == 2, timeout=20)
    assert [t["trigger"] for t in runs.json()["items"]] == ["schedule", "definition"]

    listing = await cli("definitions", "runs", definition_id, "--api", api.url)
    assert listing.returncode == 0 and "schedule" in listing.stdout and task_id in listing.stdout

    assert (await cli("schedules", "delete", definition_id, "--api", api.url)).returncode == 0
    gone = await cli("schedules", "trigger", definition_id, "--api", api.url)
    assert gone.returncode == 1 and "has no schedule" in gone.stderr
    assert (await cli("definitions", "delete", definition_id, "--api", api.url)).returncode == 0
    unknown = await cli("definitions", "show", definition_id, "--api", api.url)
    assert unknown.returncode == 1 and "not found" in unknown.stderr
