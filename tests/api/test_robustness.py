"""Odd client input is answered with a reason or served, never a 500, on either database."""

import pytest

from tests.helpers import add_task_secret, invoice_payload, task_body

HUGE = 10**30

CASES = {
    "non-finite number": ("POST", "/tasks", {"content": (
        b'{"type":"invoice_follow_up","payload":{"customer_name":"a","customer_email":"a@b.co",'
        b'"invoice_number":"1","invoice_amount":1e400,"currency":"USD","due_date":"2025-01-01","days_overdue":1}}'),
        "headers": {"content-type": "application/json"}}),
    "NUL in title": ("POST", "/tasks", {"json": task_body(title="a\x00b")}),
    "NUL in subject": ("POST", "/tasks", {"json": task_body(subject_ref_id="\x00")}),
    "NUL in payload": ("POST", "/tasks", {"json": task_body(payload=invoice_payload(customer_name="x\x00y"))}),
    "NUL in a comment": ("POST", "/tasks/nope/approve", {"json": {"comment": "\x00"}}),
    "huge integer": ("POST", "/tasks", {"json": task_body(payload=invoice_payload(days_overdue=HUGE))}),
    "body is a list": ("POST", "/tasks", {"json": [1, 2]}),
    "batch items not objects": ("POST", "/tasks/batch", {"json": {"items": [1, "x"]}}),
    "extreme dates": ("GET", "/tasks?due_before=9999-12-31T23:59:59Z&created_after=0001-01-01T00:00:00Z", {}),
    "huge limit": ("GET", f"/tasks?limit={HUGE}", {}),
    "huge offset": ("GET", f"/tasks?offset={HUGE}", {}),
    "NUL in a filter": ("GET", "/tasks?owner_id=%00", {}),
    "NUL in an id": ("GET", "/tasks/%00", {}),
    "long status": ("PATCH", "/tasks/x", {"json": {"newStatus": "x" * 40}}),
    "long URL": ("POST", "/subscriptions", {"json": {"url": "http://" + "a" * 3000 + ".com", "secret": "s"}}),
    "long Idempotency-Key": ("POST", "/tasks", {"json": task_body(), "headers": {"Idempotency-Key": "k" * 300}}),
    "zero attempts": ("POST", "/tasks", {"json": task_body(retry={"max_attempts": 0})}),
    "unknown method": ("POST", "/tasks", {"json": {"type": "http_request",
                                                   "payload": {"url": "http://x", "method": "TRACE"}}}),
    "range ends first": ("POST", "/tasks", {"json": {"type": "report", "payload": {
        "kind": "task_summary", "start": "2020-01-01T00:00:00Z", "end": "2019-01-01T00:00:00Z"}}}),
    "broken template": ("POST", "/tasks", {"json": {"type": "email", "payload": {
        "to": ["a@b.co"], "subject": "{{", "body": "x"}}}),
}


# Odd but valid: served as asked.
SERVED = {"huge integer", "extreme dates", "long URL"}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_odd_input_is_refused_with_a_reason_or_served(stack, case):
    method, path, options = CASES[case]
    add_task_secret(stack.settings, "default", "s", "whsec-robust")  # the subscription's signing secret
    response = await stack.http.request(method, path, **options)
    if case in SERVED:
        assert response.status_code in (200, 201), (response.status_code, response.text[:300])
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        assert response.json()["detail"]
