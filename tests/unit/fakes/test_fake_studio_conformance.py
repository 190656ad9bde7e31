"""The fake Studio v2 API answers what Twilio's OpenAPI spec says it answers.

For every GET path the fake serves, fetch a real response over HTTP and validate the
body against that path's 200 schema in ``shared/specs/twilio_studio_v2.yaml`` (OpenAPI
3.0, converted to JSON Schema 2020-12: ``nullable`` becomes a ``null`` type union,
object schemas get ``additionalProperties: false`` so the fake cannot invent fields).
The current shape must carry every field the spec defines; ``legacy_shape`` (the
seed's older shape) may lack some but must not carry any the spec lacks. Path
parameters must satisfy the spec's patterns, and list paging must follow ``PageSize``
with absolute ``next_page_url`` links.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import yaml
from aiohttp import ClientSession, encode_basic_auth
from jsonschema import Draft202012Validator, FormatChecker
from pytest_aiohttp import AiohttpServer
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from tests.fakes.studio_api import create_app
from tests.fakes.studio_data import Execution, FakeStudio, Flow, Step

SPEC_PATH = Path(__file__).resolve().parents[4] / "shared" / "specs" / "twilio_studio_v2.yaml"
SPEC_URI = "urn:twilio:studio:v2"
JSON = "application/json"

if not SPEC_PATH.is_file():
    pytest.skip(
        f"Twilio Studio v2 OpenAPI spec not found at {SPEC_PATH}; "
        "check out shared/ beside the repo to run the conformance tests",
        allow_module_level=True,
    )


# -- spec -> JSON Schema ---------------------------------------------------------


def to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects (recursively) as strict JSON Schema 2020-12."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: to_json_schema(value) for key, value in node.items()}
    if schema.pop("nullable", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "properties" in schema and schema.get("type") == "object":
        schema.setdefault("additionalProperties", False)
    return schema


SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
REGISTRY: Registry[Any] = Registry().with_resource(
    SPEC_URI, DRAFT202012.create_resource(to_json_schema(SPEC))
)

FORMATS = FormatChecker(formats=())
TWILIO_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")  # 2019-05-10T20:51:29Z


def _is_twilio_date(value: object) -> bool:
    return not isinstance(value, str) or bool(TWILIO_DATE.match(value))


def _is_absolute_url(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _is_url_map(value: object) -> bool:
    return not isinstance(value, dict) or all(_is_absolute_url(v) for v in value.values())


FORMATS.checks("date-time")(_is_twilio_date)
FORMATS.checks("uri")(_is_absolute_url)
FORMATS.checks("uri-map")(_is_url_map)


def get_operation(path: str) -> dict[str, Any]:
    operation: dict[str, Any] = SPEC["paths"][path]["get"]
    return operation


def response_validator(path: str, *, require_all: bool) -> Draft202012Validator:
    """The 200 schema of ``GET path``, referenced inside the registered spec."""
    pointer = "/".join(
        segment.replace("~", "~0").replace("/", "~1")
        for segment in ("paths", path, "get", "responses", "200", "content", JSON, "schema")
    )
    ref = f"{SPEC_URI}#/{quote(pointer)}"
    schema: dict[str, Any] = {"$ref": ref}
    if require_all:
        schema = {"allOf": [schema, required_everywhere(path)]}
    return Draft202012Validator(schema, registry=REGISTRY, format_checker=FORMATS)


def ok_content(path: str) -> dict[str, Any]:
    content: dict[str, Any] = get_operation(path)["responses"]["200"]["content"][JSON]
    return content


def resource_ref(path: str) -> tuple[str | None, str]:
    """(list key or None, the resource's component schema name) for ``GET path``."""
    schema = ok_content(path)["schema"]
    key = next((k for k in schema.get("properties", {}) if k != "meta"), None)
    ref: str = schema["properties"][key]["items"]["$ref"] if key else schema["$ref"]
    return key, ref.rsplit("/", 1)[1]


def resource_schema(path: str) -> tuple[str | None, dict[str, Any]]:
    """(list key or None, the resource's component schema) for ``GET path``."""
    key, name = resource_ref(path)
    component: dict[str, Any] = SPEC["components"]["schemas"][name]
    return key, component


def required_everywhere(path: str) -> dict[str, Any]:
    """Every property the spec defines must be present (the current shape is complete)."""
    key, component = resource_schema(path)
    required = {"required": sorted(component["properties"])}
    if key is None:
        return required
    meta = ok_content(path)["schema"]
    return {
        "required": [key, "meta"],
        "properties": {
            key: {"items": required},
            "meta": {"required": sorted(meta["properties"]["meta"]["properties"])},
        },
    }


def instances(body: dict[str, Any], key: str | None) -> Iterator[dict[str, Any]]:
    yield from body[key] if key else [body]


def example_link_keys() -> dict[str, set[str]]:
    """Component schema name -> the ``links`` keys the spec's GET examples show."""
    found: dict[str, set[str]] = {}
    for path, item in SPEC["paths"].items():
        if "get" not in item:
            continue
        key, name = resource_ref(path)
        for example in ok_content(path).get("examples", {}).values():
            for resource in instances(example["value"], key):
                if isinstance(resource.get("links"), dict):
                    found[name] = set(resource["links"])
    return found


# -- the fake, served -----------------------------------------------------------


@dataclass
class World:
    fake: FakeStudio
    base: str
    flow: Flow
    execution: Execution
    step: Step


Params = Callable[[World], dict[str, str]]

# spec path -> its path parameters, drawn from the fake's data
CASES: dict[str, Params] = {
    "/v2/Flows": lambda w: {},
    "/v2/Flows/{Sid}": lambda w: {"Sid": w.flow.sid},
    "/v2/Flows/{Sid}/Revisions": lambda w: {"Sid": w.flow.sid},
    "/v2/Flows/{Sid}/Revisions/{Revision}": lambda w: {"Sid": w.flow.sid, "Revision": "2"},
    "/v2/Flows/{FlowSid}/Executions": lambda w: {"FlowSid": w.flow.sid},
    "/v2/Flows/{FlowSid}/Executions/{Sid}": lambda w: {
        "FlowSid": w.flow.sid,
        "Sid": w.execution.sid,
    },
    "/v2/Flows/{FlowSid}/Executions/{ExecutionSid}/Context": lambda w: {
        "FlowSid": w.flow.sid,
        "ExecutionSid": w.execution.sid,
    },
    "/v2/Flows/{FlowSid}/Executions/{ExecutionSid}/Steps": lambda w: {
        "FlowSid": w.flow.sid,
        "ExecutionSid": w.execution.sid,
    },
    "/v2/Flows/{FlowSid}/Executions/{ExecutionSid}/Steps/{Sid}": lambda w: {
        "FlowSid": w.flow.sid,
        "ExecutionSid": w.execution.sid,
        "Sid": w.step.sid,
    },
    "/v2/Flows/{FlowSid}/Executions/{ExecutionSid}/Steps/{StepSid}/Context": lambda w: {
        "FlowSid": w.flow.sid,
        "ExecutionSid": w.execution.sid,
        "StepSid": w.step.sid,
    },
}
EXAMPLE_LINKS = example_link_keys()
PLACEHOLDER = re.compile(r"\{[^}]+\}")


def route_shape(path: str) -> str:
    return PLACEHOLDER.sub("{}", path)


def populated(legacy_shape: bool) -> tuple[FakeStudio, Flow, Execution, Step]:
    """Three of everything (so PageSize=2 pages), nulls and non-nulls both served."""
    fake = FakeStudio(legacy_shape=legacy_shape)
    flow = fake.add_flow(friendly_name="Main")
    fake.add_revision(flow, status="draft", commit_message="draft edit")
    fake.add_revision(flow, commit_message="published again")
    fake.add_flow(friendly_name="Single revision")  # date_updated null
    fake.add_flow(friendly_name="Draft", status="draft")
    executions = fake.populate(executions=2, steps=3, flow=flow)
    fake.add_execution(flow, status="active", contact_channel_address=None)
    execution = executions[0]
    step = fake.add_step(execution, name="Nested", parent_step_sid=execution.steps[0].sid)
    return fake, flow, execution, step


@pytest.fixture(params=[False, True], ids=["current", "legacy"])
async def world(request: pytest.FixtureRequest, aiohttp_server: AiohttpServer) -> World:
    fake, flow, execution, step = populated(legacy_shape=request.param)
    server = await aiohttp_server(create_app(fake))
    return World(fake, str(server.make_url("")).rstrip("/"), flow, execution, step)


async def fetch(world: World, url: str) -> Any:
    auth = {"Authorization": encode_basic_auth(*world.fake.credentials)}
    async with ClientSession(headers=auth) as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == JSON
        return await response.json()


def errors_of(validator: Draft202012Validator, body: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
        for e in validator.iter_errors(body)
    ]


# -- tests -----------------------------------------------------------------------


def test_every_fake_route_is_a_spec_get_path_with_a_case() -> None:
    fake_routes = {
        route_shape(r.resource.canonical)
        for r in create_app(FakeStudio()).router.routes()
        if r.method == "GET" and r.resource is not None
    }
    spec_gets = {route_shape(p) for p, item in SPEC["paths"].items() if "get" in item}
    assert fake_routes <= spec_gets, f"fake serves paths the spec lacks: {fake_routes - spec_gets}"
    assert fake_routes == {route_shape(p) for p in CASES}


def test_strict_schema_rejects_invented_and_mistyped_fields() -> None:
    validator = response_validator("/v2/Flows/{FlowSid}/Executions", require_all=False)
    meta = {"page": 0, "page_size": 50, "key": "executions", "next_page_url": None}
    assert not errors_of(validator, {"executions": [], "meta": meta})
    assert errors_of(
        validator, {"executions": [{"sid": "FN" + "0" * 32, "bogus": 1}], "meta": meta}
    )
    assert errors_of(validator, {"executions": [], "meta": {**meta, "extra": True}})
    assert errors_of(validator, {"executions": [{"date_created": "2019-05-10 20:51"}]})
    assert errors_of(validator, {"executions": [{"url": "/v2/Flows"}]})
    assert errors_of(validator, {"executions": [], "meta": meta, "more": []})


@pytest.mark.parametrize("path", list(CASES))
async def test_response_matches_spec_schema(world: World, path: str) -> None:
    params = CASES[path](world)
    operation = get_operation(path)
    declared = {p["name"]: p for p in operation["parameters"] if p["in"] == "path"}
    assert set(declared) == set(params), f"{path}: spec path parameters are {sorted(declared)}"
    for name, value in params.items():
        assert declared[name].get("required") is True
        pattern = declared[name]["schema"].get("pattern")
        assert pattern is None or re.search(pattern, value), f"{name}={value} !~ {pattern}"

    url = world.base + path.format(**params)
    body = await fetch(world, url)
    validator = response_validator(path, require_all=not world.fake.legacy_shape)
    assert not errors_of(validator, body), f"GET {path} does not match the spec"

    key, component = resource_schema(path)
    assert list(instances(body, key)), f"GET {path}: nothing to validate"
    links = EXAMPLE_LINKS.get(resource_ref(path)[1])
    for item in instances(body, key):  # links is a free-form uri-map: match the examples
        assert links is None or set(item["links"]) == links, f"{path}: links {item['links']}"
    if key is None:
        assert body["url"] == url
    else:
        assert body["meta"]["key"] == key and body["meta"]["page_size"] == 50
        assert body["meta"]["url"].startswith(world.base + urlsplit(url).path + "?")
    if world.fake.legacy_shape:  # older shape: a subset of the current spec's fields
        for item in instances(body, key):
            assert set(item) <= set(component["properties"])


@pytest.mark.parametrize("path", [p for p in CASES if resource_schema(p)[0] is not None])
async def test_page_size_paging_follows_absolute_next_page_urls(world: World, path: str) -> None:
    key = resource_schema(path)[0]
    validator = response_validator(path, require_all=not world.fake.legacy_shape)
    list_path = path.format(**CASES[path](world))
    url: str | None = f"{world.base}{list_path}?PageSize=2"
    seen: list[str] = []
    page = 0
    while url is not None:
        body = await fetch(world, url)
        assert not errors_of(validator, body), f"GET {url} does not match the spec"
        meta = body["meta"]
        assert (meta["page"], meta["page_size"], meta["key"]) == (page, 2, key)
        assert 1 <= len(body[key]) <= 2
        seen += [item["url"] for item in body[key]]
        url = meta["next_page_url"]
        if url is not None:
            assert url.startswith(f"{world.base}{list_path}?"), url
            assert parse_qs(urlsplit(url).query)["PageSize"] == ["2"]
        page += 1
    assert page >= 2, f"{path}: expected more than one page of 2"
    assert len(seen) == len(set(seen)), f"{path}: pages overlap: {seen}"


def test_converted_schema_accepts_the_specs_own_examples() -> None:
    """The strict conversion does not reject what Twilio documents (a guard on ourselves)."""
    checked = 0
    for path in CASES:
        content = ok_content(path)
        validator = response_validator(path, require_all=False)
        for name, example in content.get("examples", {}).items():
            assert not errors_of(validator, example["value"]), f"{path} example {name}"
            checked += 1
    assert checked >= len(CASES)
