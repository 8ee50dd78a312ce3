"""The SDK's models against the server's own OpenAPI document.

The models are written by hand for readable types; this keeps them honest: every model's fields
are exactly the properties of the schema it decodes (``from_`` is ``from``), and every object
schema a response can hold has a model. A field added to or renamed in the server's views fails
here until the SDK follows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

import wattprint.models as models
from conftest import Live

# Model → the schema it decodes, where the names differ.
SCHEMA_OF = {
    "Gpu": "GpuView",
    "Instance": "InstanceView",
    "Provenance": "FootprintProvenance",
    "Usage": "UsageView",
    "InstanceUsage": "InstanceUsageView",
    "TenantSummary": "TenantSummaryView",
    "Workload": "WorkloadView",
    "Coverage": "CoverageView",
    "Embodied": "EmbodiedView",
    "AverageEmissions": "AverageEmissionsView",
    "Footprint": "FootprintView",
    "FlexibleStart": "FlexibleStartView",
    "ScheduleRun": "RunView",
    "PauseResume": "PauseResumeView",
    "WhatIf": "WhatIfView",
    "OperatorTenant": "TenantView",
    "OperatorTenantList": "TenantList",
    "IntensityValue": "IntensityView",
    "Restatement": "RestatementView",
    "Restatements": "RestatementsView",
    "Statement": "StatementView",
}
# Object schemas with no model of their own: request bodies (the SDK builds them from
# arguments), the problem document (``wattprint.errors``) and core's footprint fields, which
# ``FootprintView`` flattens.
NOT_MODELS = {"CloseRequest", "LabelsRequest", "WorkloadRequest", "ProblemDocument", "Footprint"}


def _properties(schemas: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return _properties(schemas, schemas[schema["$ref"].rsplit("/", 1)[-1]])
    found = set(schema.get("properties", {}))
    for key in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(key, []):
            found |= _properties(schemas, part)
    return found


def _models() -> dict[str, type]:
    return {
        name: cls
        for name, cls in vars(models).items()
        if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == models.__name__
    }


def test_every_model_has_exactly_its_schemas_fields(live: Live) -> None:
    doc = httpx.get(f"{live.url}/openapi.json", timeout=30).json()
    schemas: dict[str, Any] = doc["components"]["schemas"]
    for name, cls in _models().items():
        schema = SCHEMA_OF.get(name, name)
        assert schema in schemas, f"{name}: no schema {schema} in the document"
        fields = {f.name.rstrip("_") for f in dataclasses.fields(cls)}
        properties = _properties(schemas, schemas[schema])
        assert fields == properties, (
            f"{name} vs {schema}: only in the model {sorted(fields - properties)}, "
            f"only in the document {sorted(properties - fields)}"
        )


def test_every_response_object_has_a_model(live: Live) -> None:
    doc = httpx.get(f"{live.url}/openapi.json", timeout=30).json()
    schemas: dict[str, Any] = doc["components"]["schemas"]
    modelled = {SCHEMA_OF.get(name, name) for name in _models()}
    objects = {name for name, s in schemas.items() if _properties(schemas, s)}
    missing = objects - modelled - NOT_MODELS
    assert not missing, f"schemas with no SDK model: {sorted(missing)}"
