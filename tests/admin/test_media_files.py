"""Uploading media files in the admin: clear refusals, nothing half-stored, scoping."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from botplatform.models import MediaFile
from tests.admin.conftest import operator_create
from tests.factories import project_create

pytestmark = pytest.mark.django_db
PNG = b"\x89PNG\r\n\x1a\n" + b"\x02" * 200
ADD = "admin:botplatform_mediafile_add"


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def _post(client, project, kind, name, data, title=""):
    return client.post(
        reverse(ADD),
        {
            "project": project.pk,
            "kind": kind,
            "title": title,
            "file": SimpleUploadedFile(name, data, content_type="application/octet-stream"),
        },
    )


def test_an_editor_uploads_a_photo_and_sees_its_number(client, project, media_root):
    client.force_login(operator_create("ed", project, role="editor"))
    response = _post(client, project, "photo", "menu.png", PNG)
    assert response.status_code == 302, response.content.decode()[:2000]
    media = MediaFile.objects.get()
    assert (media.project, media.kind, media.title, media.size) == (
        project,
        "photo",
        "menu.png",
        len(PNG),
    )
    assert (media_root / media.file.name).read_bytes() == PNG
    listing = client.get(reverse("admin:botplatform_mediafile_changelist")).content.decode()
    assert f"<code>{media.pk}</code>" in listing


@pytest.mark.parametrize(
    ("kind", "name", "data", "expected"),
    [
        ("photo", "menu.png", b"%PDF-1.4 not a picture", "This is not a JPEG, PNG or WebP picture"),
        ("photo", "menu.exe", PNG, "A photo must be one of: .jpg, .jpeg, .png, .webp"),
        ("sticker", "s.webp", b"RIFF" + b"\x00" * 600_000, "a sticker may be at most 512 KB"),
    ],
)
def test_a_refused_upload_says_why_and_stores_nothing(
    client, project, media_root, kind, name, data, expected
):
    client.force_login(operator_create("ed", project, role="editor"))
    response = _post(client, project, kind, name, data)
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert not MediaFile.objects.exists()
    assert not any(media_root.rglob("*.*"))


def test_an_upload_into_a_foreign_project_is_refused(client, project, media_root):
    foreign = project_create(name="Other")
    client.force_login(operator_create("ed", project, role="editor"))
    response = _post(client, foreign, "photo", "menu.png", PNG)
    assert response.status_code == 200  # the project is not a valid choice
    assert not MediaFile.objects.exists()


def test_support_cannot_upload(client, project, media_root):
    client.force_login(operator_create("sup", project, role="support"))
    assert _post(client, project, "photo", "menu.png", PNG).status_code == 403
    assert not MediaFile.objects.exists()
