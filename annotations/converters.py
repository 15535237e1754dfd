"""The `<id:…>` path converter: a row id, matched only within the database's range.

Django's `<int:…>` takes any run of digits, and an id past the largest 64-bit integer
raised `OverflowError` in the database driver (a 500, with DEBUG on Django's debug page
and the settings) wherever a view filtered on it without Django's own range check. Here
an id no row can have matches no URL at all: a 404 for every view, before any query."""

from __future__ import annotations

from django.urls import register_converter

# BigAutoField (DEFAULT_AUTO_FIELD) holds at most a signed 64-bit integer on every database.
MAX_ROW_ID = 2**63 - 1


class RowIdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ROW_ID:
            raise ValueError("past the largest row id")  # the resolver: no match, a 404
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(RowIdConverter, "id")
