"""What an extraction is asked for: field specs (CSS selectors, types), the JSON Schema the result must meet, and
the extract type's payload (also the agent's fetch_and_extract tool's arguments, which the workflow checks).
Checked without fetching anything; the fetching and extracting is followthrough/infra/extraction.py."""

import re
from typing import Any, Literal

import soupsieve
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from followthrough.domain.http_rules import http_url

FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
MAX_FIELDS = 100
DEFAULT_MAX_BYTES = 2_000_000
MAX_TIMEOUT_SECONDS = 30
MAX_PAGE_BYTES = 5_000_000


class FieldSpec(BaseModel):
    """One field of the result: where it is on the page and what it becomes."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    selector: str = Field(min_length=1, max_length=500, examples=["h1.product-title"],
                          description="A CSS selector; the first matching element, or every one with `all`.")
    attribute: str | None = Field(None, min_length=1, max_length=100, examples=["href"],
                                  description="Take this attribute instead of the element's text.")
    all: bool = Field(False, description="A list of every match instead of the first.")
    type: Literal["string", "number", "integer", "boolean"] = "string"
    required: bool = Field(True, description="Matching nothing is an error; else the field is left out "
                                             "(an empty list with `all`).")

    @field_validator("selector")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            soupsieve.compile(value)
        except soupsieve.SelectorSyntaxError as err:
            raise ValueError(f"not a valid CSS selector: {str(err).splitlines()[0]}") from None
        return value


def parse_fields(raw: Any) -> dict[str, FieldSpec]:
    """Field specs from JSON-like input; raises pydantic's ValidationError naming the field."""
    return _Fields.model_validate({"fields": raw}).fields


class _Fields(BaseModel):
    fields: dict[str, FieldSpec] = Field(min_length=1, max_length=MAX_FIELDS)

    @field_validator("fields")
    @classmethod
    def _names(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        bad = [name for name in value if not re.match(FIELD_NAME, name)]
        if bad:
            raise ValueError(f"field names must match {FIELD_NAME}: {', '.join(map(repr, bad))}")
        return value


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError when ``schema`` is not a valid JSON Schema (draft 2020-12) or refers outside itself."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        where = "/".join(map(str, err.absolute_path))
        raise ValueError(f"not a valid JSON Schema{f' at {where}' if where else ''}: {err.message}") from None
    # A schema is checked where it runs, fetching nothing: only references inside it (#/$defs/...).
    outside = sorted({ref for ref in _refs(schema) if not ref.startswith("#")})
    if outside:
        raise ValueError(f"only local $ref (#/...) are supported, not {', '.join(map(repr, outside))}")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [v for k, v in node.items() if k in ("$ref", "$dynamicRef") and isinstance(v, str)]
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


class ExtractPayload(BaseModel):
    # `schema` would shadow BaseModel.schema, so the field is json_schema and travels as "schema".
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    url: str | None = Field(None, max_length=2000, examples=["https://shop.example.com/widgets/42"],
                            description="The page to fetch (exclusive with `html`).")
    html: str | None = Field(None, description="The page itself (exclusive with `url`).")
    fields: dict[str, FieldSpec] = Field(min_length=1, max_length=MAX_FIELDS,
                                         examples=[{"title": {"selector": "h1"},
                                                    "price": {"selector": ".price", "type": "number"}}])
    json_schema: dict[str, Any] | None = Field(None, alias="schema",
                                               description="A JSON Schema (2020-12) the extracted object must meet.")
    timeout_seconds: float = Field(10, gt=0, le=MAX_TIMEOUT_SECONDS)
    max_bytes: int = Field(DEFAULT_MAX_BYTES, gt=0, le=MAX_PAGE_BYTES)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value.strip())

    @field_validator("fields")
    @classmethod
    def _names(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        return parse_fields(value)

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ExtractPayload":
        if (self.url is None) == (self.html is None):
            raise ValueError("give either `url` or `html`")
        # A schema that requires what no field extracts fails every run: say so now.
        required = (self.json_schema or {}).get("required")
        if isinstance(required, list):
            unknown = [name for name in required if isinstance(name, str) and name not in self.fields]
            if unknown:
                raise ValueError(f"the schema requires {', '.join(map(repr, unknown))}, which no field extracts")
        return self
