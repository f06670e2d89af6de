"""importworkflow / exportworkflow round trip, readable errors, and the JSON Schema."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest
from django.core.management import CommandError, call_command

from workflows.models import Workflow

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "workflow.schema.json").read_text())
FILE = {
    "format": 1,
    "slug": "city",
    "name": "Ask the city",
    "description": "Asks where the user lives",
    "priority": 3,
    "is_active": True,
    "triggers": [{"type": "command", "command": "city", "interrupt": True}],
    "definition": {
        "start": "ask",
        "steps": {
            "ask": {"type": "input", "text": "City?", "variable": "city", "next": "ok"},
            "ok": {"type": "message", "text": "{{ vars.city }} it is"},
        },
    },
}


def test_import_publish_export_round_trip(project, tmp_path):
    path = tmp_path / "city.json"
    path.write_text(json.dumps(FILE))
    out = io.StringIO()
    call_command("importworkflow", str(path), project=project.slug, publish=True, stdout=out)
    assert "published version 1" in out.getvalue()
    workflow = Workflow.objects.get(project=project, slug="city")
    assert workflow.published_version.number == 1 and workflow.priority == 3
    exported = io.StringIO()
    call_command("exportworkflow", project=project.slug, workflow="city", stdout=exported)
    assert json.loads(exported.getvalue()) == FILE
    # Importing the export again is a no-op for the published version.
    path.write_text(exported.getvalue())
    call_command(
        "importworkflow", str(path), project=project.slug, publish=True, stdout=io.StringIO()
    )
    workflow.refresh_from_db()
    assert workflow.versions.count() == 1


def test_import_errors_are_readable_and_nothing_is_written(project, tmp_path):
    bad = json.loads(json.dumps(FILE))
    bad["definition"]["steps"]["ok"]["next"] = "nowhere"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CommandError) as info:
        call_command("importworkflow", str(path), project=project.slug, publish=True)
    assert "ok: next points to the step 'nowhere'" in str(info.value)
    assert not Workflow.objects.filter(slug="city").exists()
    path.write_text("{not json")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("importworkflow", str(path), project=project.slug)
    with pytest.raises(CommandError, match="no project"):
        call_command("importworkflow", str(path), project="nope")
    with pytest.raises(CommandError, match="no workflow"):
        call_command("exportworkflow", project=project.slug, workflow="nope")


def test_files_validate_against_the_schema():
    jsonschema.validate(FILE, SCHEMA)
    demo = json.loads((ROOT / "workflows" / "fixtures" / "demo.json").read_text())
    for workflow in demo["workflows"]:
        jsonschema.validate(workflow, SCHEMA)
    broken = json.loads(json.dumps(FILE))
    broken["definition"]["steps"]["ask"]["type"] = "teleport"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    no_target = json.loads(json.dumps(FILE))
    no_target["definition"]["steps"]["ok"]["buttons"] = [[{"text": "Lost"}]]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(no_target, SCHEMA)


def test_import_without_publish_only_drafts_and_a_publish_carries_its_note(project, tmp_path):
    path = tmp_path / "city.json"
    path.write_text(json.dumps(FILE))
    call_command(
        "importworkflow", str(path), project=project.slug, publish=True, stdout=io.StringIO()
    )
    workflow = Workflow.objects.get(project=project, slug="city")
    assert workflow.published_version.note == "imported from city.json"
    assert workflow.published_version.triggers == FILE["triggers"]
    changed = {**FILE, "triggers": [{"type": "fallback"}]}
    path.write_text(json.dumps(changed))
    out = io.StringIO()
    call_command("importworkflow", str(path), project=project.slug, stdout=out)
    assert "the draft only: publish it to make it live" in out.getvalue()
    workflow.refresh_from_db()
    assert workflow.triggers == [{"type": "fallback"}]
    assert workflow.published_version.triggers == FILE["triggers"]
    call_command(
        "importworkflow",
        str(path),
        project=project.slug,
        publish=True,
        note="fallback on",
        stdout=io.StringIO(),
    )
    workflow.refresh_from_db()
    assert workflow.published_version.number == 2
    assert workflow.published_version.note == "fallback on"
    assert workflow.published_version.triggers == [{"type": "fallback"}]


BILINGUAL = {
    **FILE,
    "slug": "city-bilingual",
    "definition": {
        "start": "lang",
        "steps": {
            "lang": {
                "type": "choose_language",
                "text": {"en": "Language?", "ru": "Язык?"},
                "next": "ask",
            },
            "ask": {
                "type": "input",
                "text": {"en": "City?", "ru": "Город?", "pt-br": "Cidade?"},
                "retry_text": {"ru": "Ещё раз, пожалуйста"},
                "variable": "city",
                "next": "ok",
            },
            "ok": {
                "type": "message",
                "text": {"en": "{{ vars.city }} it is", "ru": "Итак, {{ vars.city }}"},
                "buttons": [{"text": {"en": "Again", "ru": "Ещё"}, "next": "ask"}],
            },
        },
    },
}


def test_import_and_export_carry_every_language(project, tmp_path):
    jsonschema.validate(BILINGUAL, SCHEMA)
    path = tmp_path / "bilingual.json"
    path.write_text(json.dumps(BILINGUAL, ensure_ascii=False))
    call_command(
        "importworkflow", str(path), project=project.slug, publish=True, stdout=io.StringIO()
    )
    workflow = Workflow.objects.get(project=project, slug="city-bilingual")
    assert workflow.published_version.definition == BILINGUAL["definition"]
    exported = io.StringIO()
    call_command("exportworkflow", project=project.slug, workflow="city-bilingual", stdout=exported)
    assert json.loads(exported.getvalue()) == BILINGUAL


def test_import_refuses_a_bad_language_code_readably(project, tmp_path):
    bad = json.loads(json.dumps(BILINGUAL))
    bad["definition"]["steps"]["ok"]["text"] = {"EN": "x"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CommandError) as info:
        call_command("importworkflow", str(path), project=project.slug, publish=True)
    assert "'EN' is not a language code" in str(info.value)
    assert not Workflow.objects.filter(slug="city-bilingual").exists()
