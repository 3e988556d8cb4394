"""followthrough/infra/extraction.py on its own: selectors, coercion, schema errors, and the fetch's limits against a
real server on 127.0.0.1 through the SSRF-guarded client."""

from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from followthrough.domain.extraction_rules import check_schema, parse_fields
from followthrough.infra.extraction import ExtractionError, FetchError, check_against, extract_fields, fetch_page
from followthrough.infra.outbound import guarded_client
from tests.receivers import Receiver

PAGE = """<html><head><title>Widget</title></head><body>
<h1 class="name"> Widget <b>Pro</b> </h1>
<span class="price">$1,234.50</span> <span class="stock">42 in stock</span>
<ul><li class="tag">steel</li><li class="tag">blue</li></ul>
<a class="more" href="/widgets/42/specs" rel="nofollow noopener">Specs</a>
<input type="checkbox" class="gift" value="yes">
</body></html>"""
HTML = {"Content-Type": "text/html; charset=utf-8"}


def test_fields_by_selector_with_text_attributes_lists_and_types():
    fields = parse_fields({
        "name": {"selector": "h1.name"},
        "price": {"selector": ".price", "type": "number"},
        "stock": {"selector": ".stock", "type": "integer"},
        "tags": {"selector": "li.tag", "all": True},
        "specs": {"selector": "a.more", "attribute": "href"},
        "rel": {"selector": "a.more", "attribute": "rel"},
        "gift": {"selector": "input.gift", "attribute": "value", "type": "boolean"},
        "rating": {"selector": ".rating", "type": "number", "required": False},
        "reviews": {"selector": ".review", "all": True, "required": False},
    })
    assert extract_fields(PAGE, fields) == {
        "name": "Widget Pro", "price": 1234.5, "stock": 42, "tags": ["steel", "blue"],
        "specs": "/widgets/42/specs", "rel": "nofollow noopener", "gift": True, "reviews": []}


def test_a_required_field_that_matches_nothing_is_named():
    with pytest.raises(ExtractionError) as raised:
        extract_fields(PAGE, parse_fields({"name": {"selector": "h1"}, "sku": {"selector": ".sku"}}))
    assert raised.value.field == "sku" and "'.sku' matched nothing" in str(raised.value)
    with pytest.raises(ExtractionError, match="field 'link': .* no element has the attribute 'data-id'"):
        extract_fields(PAGE, parse_fields({"link": {"selector": "a", "attribute": "data-id"}}))


def test_a_value_that_is_not_its_type_is_named():
    with pytest.raises(ExtractionError, match="field 'name': 'Widget Pro' holds no number"):
        extract_fields(PAGE, parse_fields({"name": {"selector": "h1", "type": "number"}}))
    with pytest.raises(ExtractionError, match="field 'price': '\\$1,234.50' is not an integer"):
        extract_fields(PAGE, parse_fields({"price": {"selector": ".price", "type": "integer"}}))
    with pytest.raises(ExtractionError, match="field 'tags': 'steel' is not a boolean"):
        extract_fields(PAGE, parse_fields({"tags": {"selector": "li", "all": True, "type": "boolean"}}))


def test_bad_specs_are_refused_with_the_field_named():
    with pytest.raises(ValidationError) as raised:
        parse_fields({"price": {"selector": "span[[", "type": "number"}})
    [error] = raised.value.errors()
    assert error["loc"] == ("fields", "price", "selector") and "not a valid CSS selector" in error["msg"]
    with pytest.raises(ValidationError, match="type"):
        parse_fields({"price": {"selector": ".price", "type": "money"}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        parse_fields({"price": {"selector": ".price", "xpath": "//span"}})
    with pytest.raises(ValidationError, match="field names must match"):
        parse_fields({"no spaces": {"selector": ".price"}})
    with pytest.raises(ValidationError):
        parse_fields({})


def test_schema_errors_name_the_field():
    schema = {"type": "object", "required": ["name", "price"],
              "properties": {"price": {"type": "number", "maximum": 1000}, "name": {"type": "string"}}}
    check_against({"name": "Widget", "price": 10}, schema)
    with pytest.raises(ExtractionError) as raised:
        check_against({"name": "Widget", "price": 1234.5}, schema)
    assert raised.value.field == "price"
    assert "field 'price': 1234.5 is greater than the maximum of 1000" in str(raised.value)
    with pytest.raises(ExtractionError, match="'price' is a required property"):
        check_against({"name": "Widget"}, schema)
    with pytest.raises(ValueError, match="not a valid JSON Schema.*'strng' is not valid"):
        check_schema({"type": "object", "properties": {"name": {"type": "strng"}}})


@pytest.fixture
def site() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


async def test_fetch_takes_html_within_the_limit_and_follows_a_redirect(site):
    site.answer(302, "", headers={"Location": "/moved"})
    site.answer(200, PAGE, headers=HTML)
    async with guarded_client(["127.0.0.1/32"]) as client:
        page = await fetch_page(client, f"{site.url}/widget")
    assert (page.url, page.status, page.html) == (f"{site.url}/moved", 200, PAGE)
    assert [r.path for r in site.requests] == ["/widget", "/moved"]


@pytest.mark.parametrize("status, body, headers, message, retryable", [
    (200, '{"a": 1}', {}, "answered application/json, not HTML", False),
    (200, "x" * 5000, HTML, "over the limit of 1000", False),
    (404, "gone", HTML, "answered 404 Not Found", False),
    (503, "busy", HTML, "answered 503 Service Unavailable", True),
])
async def test_fetch_refuses_what_it_cannot_use(site, status, body, headers, message, retryable):
    site.answer(status, body, headers=headers)
    async with guarded_client(["127.0.0.1/32"]) as client:
        with pytest.raises(FetchError) as raised:
            await fetch_page(client, f"{site.url}/p", max_bytes=1000)
    assert message in str(raised.value) and raised.value.retryable is retryable


async def test_fetch_through_the_guard_refuses_loopback_unless_allowed(site):
    async with guarded_client([]) as client:
        with pytest.raises(FetchError) as raised:
            await fetch_page(client, site.url.replace("127.0.0.1", "localhost"))
    assert raised.value.refused and not raised.value.retryable
    assert "a loopback address" in str(raised.value) and site.requests == []


def test_a_tenants_allowed_hosts_apply_to_the_page_url_only():
    from followthrough.domain.contracts import Draft
    from followthrough.domain.guardrails import GuardrailFacts
    from followthrough.tasktypes.extract import PageHost

    params, facts = {"allowed_hosts": ["shop.example.com"]}, GuardrailFacts()
    check = PageHost().check
    assert check(None, Draft(channel="extract", subject="", body="", data={"url": "https://shop.example.com/a"}),
                 params, facts) is None
    assert check(None, Draft(channel="extract", subject="", body="", data={"url": "https://evil.example.net/"}),
                 params, facts) == "target host 'evil.example.net' is not in the allowed hosts"
    assert check(None, Draft(channel="extract", subject="", body="", data={"html": "<p>"}), params, facts) is None


def test_a_schema_refers_only_inside_itself():
    check_schema({"$defs": {"price": {"type": "number"}}, "properties": {"price": {"$ref": "#/$defs/price"}}})
    with pytest.raises(ValueError, match="only local \\$ref .* not 'https://schemas.example.com/p.json'"):
        check_schema({"properties": {"price": {"$ref": "https://schemas.example.com/p.json"}}})
    with pytest.raises(ExtractionError, match="the schema cannot be used"):
        check_against({"price": 1}, {"properties": {"price": {"$ref": "#/$defs/missing"}}})
