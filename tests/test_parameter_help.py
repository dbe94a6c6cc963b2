"""The help the Prefect UI's Custom run form shows beside each parameter: the schema Prefect builds from
each flow's signature and docstring (`parameter_schema`, the same call that registers a deployment)."""

from __future__ import annotations

import importlib

import pytest
from prefect.utilities.callables import parameter_schema

FLOWS = [
    "pg_cutover.flows.cutover:cutover",
    "pg_cutover.flows.rollback:rollback",
    "pg_cutover.flows.fleet:fleet",
    "pg_cutover.flows.finalize:finalize",
    "pg_cutover.flows.drill:restore_drill",
]


def _schema(path: str) -> dict:
    module, name = path.split(":")
    return parameter_schema(getattr(importlib.import_module(module), name).fn).model_dump_for_openapi()


@pytest.mark.parametrize("path", FLOWS)
def test_every_parameter_has_a_description(path):
    # Prefect's docstring parser reads an Args: section only after a summary line; without one every
    # description is silently missing.
    schema = _schema(path)
    missing = [name for name, prop in schema["properties"].items() if not (prop.get("description") or "").strip()]
    assert schema["properties"] and not missing, f"{path}: no help for {missing}"


@pytest.mark.parametrize("path", FLOWS)
def test_every_model_parameter_has_a_title_and_a_description(path):
    # A model parameter is drawn from its definition: without these the form shows a bare field name,
    # and the boxes inside it no help at all.
    for name, model in _schema(path)["definitions"].items():
        assert model.get("title") and model.get("description"), f"{path}: model {name} has no title or description"
        for field, prop in model.get("properties", {}).items():
            assert prop.get("title") and prop.get("description"), f"{path}: {name}.{field} has no title or description"


def test_fleet_and_finalize_name_their_defaults_and_settings():
    fleet = _schema("pg_cutover.flows.fleet:fleet")["properties"]
    assert "dry run passed" in fleet["dry_run"]["description"]
    assert "else 2" in fleet["per_host_limit"]["description"] and "else 4" in fleet["max_parallel"]["description"]
    assert "Default 1800" in fleet["approval_timeout_seconds"]["description"]
    finalize = _schema("pg_cutover.flows.finalize:finalize")["properties"]
    assert "CUTOVER_KEEP_ORIGINAL_HOURS" in finalize["dry_run"]["description"]
