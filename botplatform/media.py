"""Files operators upload for message steps: limits, checks and storing.

A file is checked before anything is written (kind, name, type, size, for photos
the first bytes), so a refused upload leaves nothing behind, and every refusal says
what to change. The bytes go to Django's default storage; a step names the file as
``stored:<id>`` and the transport uploads it to Telegram once per bot
(``botplatform/telegram/media.py``).
"""

from __future__ import annotations

import os
import unicodedata

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from botplatform.conversation import MEDIA_KINDS
from botplatform.models import MediaFile, Project

MB = 1024 * 1024
# Per kind: the file name endings Telegram shows as that kind, and its size limit.
KIND_RULES: dict[str, tuple[tuple[str, ...], int]] = {
    "photo": ((".jpg", ".jpeg", ".png", ".webp"), 10 * MB),
    "document": ((), 50 * MB),  # any type
    "video": ((".mp4", ".mov", ".webm"), 50 * MB),
    "animation": ((".gif", ".mp4"), 50 * MB),
    "audio": ((".mp3", ".m4a", ".ogg", ".flac", ".wav"), 50 * MB),
    "voice": ((".ogg", ".oga", ".opus", ".mp3", ".m4a"), 50 * MB),
    "sticker": ((".webp", ".tgs", ".webm"), 512 * 1024),
}
_PHOTO_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF")
TITLE_LIMIT = 200


def media_kind_limit(kind: str) -> int:
    """The size limit for ``kind`` in bytes (never above ``MEDIA_UPLOAD_MAX_MB``)."""
    return min(KIND_RULES[kind][1], settings.MEDIA_UPLOAD_MAX_MB * MB)


def _size_text(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB else f"{max(size // 1024, 1)} KB"


def media_upload_check(*, kind: str, name: str, size: int, head: bytes) -> list[str]:
    """What is wrong with an upload (empty: nothing). ``head``: its first bytes."""
    if kind not in KIND_RULES:
        return [f"Choose what the file is: {', '.join(MEDIA_KINDS)}."]
    problems = []
    endings, _limit = KIND_RULES[kind]
    base = os.path.basename(name or "")
    if not base or "\x00" in base or any(unicodedata.category(c) == "Cc" for c in base):
        problems.append("The file name is empty or has control characters; rename the file.")
    elif len(base) > 150:
        problems.append("The file name is longer than 150 characters; rename the file.")
    elif endings and not base.lower().endswith(endings):
        problems.append(
            f"A {kind} must be one of: {', '.join(endings)} (this file is '{base[-40:]}')."
        )
    limit = media_kind_limit(kind)
    if size <= 0:
        problems.append("The file is empty.")
    elif size > limit:
        problems.append(
            f"The file is {_size_text(size)}; a {kind} may be at most {_size_text(limit)}."
        )
    if kind == "photo" and size > 0 and not head.startswith(_PHOTO_MAGIC):
        problems.append("This is not a JPEG, PNG or WebP picture (its content says otherwise).")
    return problems


def media_file_create(
    *, project: Project, kind: str, title: str, upload: UploadedFile
) -> MediaFile:
    """Check and store an upload; raises ValidationError (nothing stored) when refused."""
    head = upload.read(16)
    upload.seek(0)
    problems = media_upload_check(kind=kind, name=upload.name or "", size=upload.size, head=head)
    title = (title or "").strip() or os.path.basename(upload.name or "")[:TITLE_LIMIT]
    if len(title) > TITLE_LIMIT or "\x00" in title:
        problems.append(f"The title must be at most {TITLE_LIMIT} characters, without NUL.")
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        media = MediaFile(
            project=project,
            kind=kind,
            title=title,
            content_type=(getattr(upload, "content_type", "") or "")[:100],
            size=upload.size,
        )
        media.file.save(os.path.basename(upload.name), upload, save=False)
        media.save()
    return media
