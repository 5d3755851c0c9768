"""Job and update identities. Names are validated here so that every path built from them
(znodes, log fields, file names) is safe."""

from __future__ import annotations

import re

import attrs

from updater.errors import InvalidRequest

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UPDATE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_name(value: object, field: str) -> str:
    """A job-key component: 1–64 chars of letters, digits, `_`, `.`, `-`, not starting with a
    separator (so `.` and `..` can never be a path component)."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(field, "must be a non-empty string")
    if not _NAME.match(value):
        raise InvalidRequest(
            field,
            "must be 1-64 characters of letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )
    return value


@attrs.frozen(order=True, cache_hash=True)
class JobKey:
    """`role/environment/name`."""

    role: str
    environment: str
    name: str

    @classmethod
    def checked(cls, role: object, environment: object, name: object) -> JobKey:
        return cls(
            check_name(role, "job.role"),
            check_name(environment, "job.environment"),
            check_name(name, "job.name"),
        )

    @classmethod
    def parse(cls, text: str, field: str = "job") -> JobKey:
        parts = text.split("/")
        if len(parts) != 3:
            raise InvalidRequest(field, f"must be role/environment/name, got {text!r}")
        return cls.checked(*parts)

    def __str__(self) -> str:
        return f"{self.role}/{self.environment}/{self.name}"


@attrs.frozen(order=True, cache_hash=True)
class UpdateKey:
    """An update of a job; `id` is made by the server."""

    job: JobKey
    id: str

    @classmethod
    def checked(cls, job: JobKey, update_id: object) -> UpdateKey:
        if not isinstance(update_id, str) or not _UPDATE_ID.match(update_id):
            raise InvalidRequest("key.id", "must be 1-64 characters of letters, digits, '_' or '-'")
        return cls(job, update_id)

    @classmethod
    def parse(cls, text: str, field: str = "key") -> UpdateKey:
        """`role/env/name/id`, the form the CLI prints."""
        job_text, sep, update_id = text.rpartition("/")
        if not sep:
            raise InvalidRequest(field, f"must be role/environment/name/id, got {text!r}")
        return cls.checked(JobKey.parse(job_text, field), update_id)

    def __str__(self) -> str:
        return f"{self.job}/{self.id}"
