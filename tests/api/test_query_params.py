"""Query strings: a parameter a route does not take is a 422 naming it and listing those it takes, on every
route (tests/api/seeds/ replay the seeds' own spellings); against the real dev server, on every configured
database."""

from datetime import datetime, timedelta, timezone

from tests.conftest import Stack
from tests.helpers import task_body, until_status


def unknown(response, key: str) -> str:
    assert response.status_code == 422, response.text
    [problem] = [p for p in response.json()["detail"] if p["loc"] == ["query", key]]
    assert problem["type"] == "unknown_query_parameter"
    return problem["msg"]


async def test_an_unknown_query_parameter_is_a_422_on_every_kind_of_route(stack: Stack):
    created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    msg = unknown(await stack.http.get("/tasks", params={"tenant_id": stack.tenant, "bogus": "1"}), "bogus")
    assert "this route takes:" in msg and "owner_id" in msg and "due_before" in msg
    for path in (f"/tasks/{task_id}", f"/tasks/{task_id}/events", "/tasks/stats", "/definitions", "/approvals",
                 "/task-types", "/healthz", "/subscriptions", f"/tasks/{task_id}/approval",
                 f"/tasks/{task_id}/stream", "/events/stream", "/approval-links/not-a-token"):
        msg = unknown(await stack.http.get(path, params={"bogus": "1"}), "bogus")
        assert "this route takes:" in msg, (path, msg)
    # A body route: refused before the body is read, so nothing is created.
    before = (await stack.http.get("/tasks", params={"tenant_id": stack.tenant})).json()["total"]
    unknown(await stack.http.post("/tasks", params={"bogus": "1"}, json=task_body(tenant_id=stack.tenant)), "bogus")
    unknown(await stack.http.post(f"/tasks/{task_id}/cancel", params={"bogus": "1"}), "bogus")
    assert (await stack.http.get("/tasks", params={"tenant_id": stack.tenant})).json()["total"] == before
    assert (await until_status(stack, task_id, "awaiting_approval"))["status"] == "awaiting_approval"
    # The inbox page takes what it reads, and nothing else.
    assert (await stack.http.get("http://testserver/ui", params={"as": "alice", "tenant_id": stack.tenant})
            ).status_code == 200
    unknown(await stack.http.get("http://testserver/ui", params={"as": "alice", "bogus": "1"}), "bogus")
    # Every unknown key is named at once.
    response = await stack.http.get("/tasks", params={"one": "1", "two": "2"})
    assert sorted(p["loc"][1] for p in response.json()["detail"]) == ["one", "two"]


async def test_two_spellings_of_one_parameter_or_page_with_offset_are_refused(stack: Stack):
    response = await stack.http.get("/tasks", params={"owner_id": "a", "ownerId": "b"})
    assert response.status_code == 422
    assert "send one of them" in response.json()["detail"][0]["msg"]
    response = await stack.http.get("/tasks", params={"page": "2", "offset": "10"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "page"]
    # Two of the seeds' spellings, two casings, or a plain repeat of a one-value filter: no value silently wins.
    for query in ("agent_id=alice&ownerId=bob", "OwnerId=a&ownerId=b", "owner_id=a&owner_id=b",
                  "page=3&Offset=5", "before=2026-01-01T00:00:00Z&due_before=2026-02-01T00:00:00Z"):
        response = await stack.http.get(f"/tasks?{query}")
        assert response.status_code == 422, (query, response.text)
        assert "send one of them" in response.json()["detail"][0]["msg"], query
    # A list filter still takes many values.
    assert (await stack.http.get("/tasks?status=pending&status=scheduled")).status_code == 200
    for bad in ("0", "-1", "two", "\u00b2", "9" * 12):
        response = await stack.http.get("/tasks", params={"page": bad})
        assert response.status_code == 422, bad
    # A route without paging does not take page either.
    unknown(await stack.http.get("/task-types", params={"page": "1"}), "page")


async def test_declared_parameters_and_headers_still_work(stack: Stack):
    due = (datetime.now(timezone.utc) + timedelta(days=2)).isoformat()
    created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, due_at=due, owner_id="ops"))
    assert created.status_code == 201, created.text
    await until_status(stack, created.json()["id"], "scheduled")
    listed = await stack.http.get("/tasks", params=[("tenant_id", stack.tenant), ("status", "scheduled"),
                                                    ("status", "pending"), ("owner_id", "ops"), ("limit", "5"),
                                                    ("offset", "0"), ("order", "due")])
    assert listed.status_code == 200, listed.text
    assert [t["id"] for t in listed.json()["items"]] == [created.json()["id"]]
    # A cursor the API did not send is still the stream's own 422 (the header is not a query parameter).
    refused = await stack.http.get("/events/stream", headers={"Last-Event-ID": "nonsense"})
    assert refused.status_code == 422 and "unknown_query_parameter" not in refused.text


async def test_the_codec_takes_the_options_the_web_ui_adds(stack: Stack):
    # The Temporal Web UI posts to <codec endpoint>/decode?preserveStorageRefs=true.
    response = await stack.http.post("http://testserver/codec/decode?preserveStorageRefs=true",
                                     json={"payloads": []})
    assert response.status_code == 200, response.text
    assert response.json() == {"payloads": []}


async def test_page_counts_pages_of_limit_rows(stack: Stack):
    created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
    task_id = created.json()["id"]
    await until_status(stack, task_id, "awaiting_approval")
    every = [e["id"] for e in (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]]
    assert len(every) >= 3
    first = (await stack.http.get(f"/tasks/{task_id}/events", params={"page": "1", "limit": "2"})).json()
    second = (await stack.http.get(f"/tasks/{task_id}/events", params={"page": "2", "limit": "2"})).json()
    assert [e["id"] for e in first["items"] + second["items"]] == every[:4]
    assert (second["offset"], second["limit"]) == (2, 2)
    # Without a limit, pages of the default size, on a route whose own default is larger too.
    beyond = (await stack.http.get(f"/tasks/{task_id}/events", params={"page": "2"})).json()
    assert (beyond["offset"], beyond["limit"], beyond["items"]) == (
        stack.settings.page_size_default, stack.settings.page_size_default, [])


async def test_the_operator_pages_take_what_their_forms_and_links_send(stack: Stack):
    created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
    task_id = created.json()["id"]
    listed = await stack.http.get("http://testserver/ui/tasks", params={
        "as": "olga", "status": "pending", "type": "invoice_follow_up", "q": "INV", "tenant_id": stack.tenant,
        "page": "1", "per_page": "10"})
    assert listed.status_code == 200, listed.text
    one = await stack.http.get(f"http://testserver/ui/tasks/{task_id}", params={"as": "olga", "done": "cancel"})
    assert one.status_code == 200, one.text
    unknown(await stack.http.get("http://testserver/ui/tasks", params={"as": "olga", "bogus": "1"}), "bogus")
    unknown(await stack.http.get(f"http://testserver/ui/tasks/{task_id}", params={"bogus": "1"}), "bogus")
