"""JSON schemas of the shapes APIs ask for (nested objects, bounded arrays, enums, patterns, number
bounds, anyOf, nullable, required / additionalProperties), each with a prompt. Strings and arrays
are bounded so the bundled model completes every one within a few dozen tokens."""

from __future__ import annotations

S = {"type": "string", "maxLength": 12}
INT = {"type": "integer", "minimum": 0, "maximum": 999}


def obj(props: dict, required: list[str] | None = None, extra: bool = False) -> dict:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": extra}


SCHEMAS: list[tuple[str, dict]] = [
    ("a person", obj({"name": S, "age": INT})),
    ("a city", obj({"city": S, "country": S, "population": {"type": "integer", "minimum": 0}})),
    ("a yes/no answer", obj({"answer": {"type": "boolean"}})),
    ("a sentiment label", obj({"sentiment": {"enum": ["positive", "negative", "neutral"]}})),
    ("a colour", {"enum": ["red", "green", "blue"]}),
    ("a rating from 1 to 5", obj({"stars": {"type": "integer", "minimum": 1, "maximum": 5}})),
    ("a temperature in Celsius", obj({"celsius": {"type": "number", "minimum": -50, "maximum": 60}})),
    ("a probability", obj({"p": {"type": "number", "minimum": 0, "maximum": 1}})),
    ("an exclusive range", obj({"x": {"type": "integer", "exclusiveMinimum": 10, "exclusiveMaximum": 20}})),
    ("three tags", obj({"tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                                 "minItems": 3, "maxItems": 3}})),
    ("one or two numbers", {"type": "array", "items": INT, "minItems": 1, "maxItems": 2}),
    ("a US zip code", obj({"zip": {"type": "string", "pattern": "^[0-9]{5}$"}})),
    ("a date", obj({"date": {"type": "string", "pattern": "^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"}})),
    ("a product code", obj({"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}})),
    ("a phone number", obj({"phone": {"type": "string", "pattern": "^\\+?[0-9]{7,10}$"}})),
    ("an optional nickname", obj({"name": S, "nickname": {"type": ["string", "null"], "maxLength": 10}})),
    ("a nullable score", obj({"score": {"anyOf": [INT, {"type": "null"}]}})),
    ("an id as number or string", obj({"id": {"anyOf": [INT, {"type": "string", "pattern": "^[a-z]{3}$"}]}})),
    ("an address", obj({"person": S, "address": obj({"street": S, "number": INT, "zip": {
        "type": "string", "pattern": "^[0-9]{4}$"}})})),
    ("an order", obj({"order_id": INT, "items": {"type": "array", "maxItems": 2, "minItems": 1, "items": obj(
        {"sku": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"}, "qty": {"type": "integer", "minimum": 1,
                                                                             "maximum": 9}})}})),
    ("a point", obj({"x": {"type": "number"}, "y": {"type": "number"}})),
    ("a book", obj({"title": S, "year": {"type": "integer", "minimum": 1450, "maximum": 2030},
                    "genre": {"enum": ["fiction", "science", "history"]}})),
    ("a boolean flag and a count", obj({"ok": {"type": "boolean"}, "count": INT})),
    ("a weekday", obj({"day": {"enum": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]}})),
    ("a const version", obj({"version": {"const": 2}, "name": S})),
    ("an RGB colour", obj({"rgb": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255},
                                   "minItems": 3, "maxItems": 3}})),
    ("a user with optional email", obj({"user": S, "email": {"type": "string", "format": "email", "maxLength": 24}},
                                       required=["user"])),
    ("a matrix", {"type": "array", "minItems": 2, "maxItems": 2, "items": {
        "type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 2}}),
    ("a status with an optional error", {"anyOf": [obj({"status": {"const": "ok"}}),
                                                   obj({"status": {"const": "error"}, "message": S})]}),
    ("a translation", obj({"source": {"enum": ["en", "fr", "de"]}, "target": {"enum": ["en", "fr", "de"]},
                           "text": S})),
    ("a percentage", obj({"percent": {"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.5}})),
    ("a name string", {"type": "string", "minLength": 2, "maxLength": 10}),
    ("a small integer", {"type": "integer", "minimum": -5, "maximum": 5}),
    ("a tree node", obj({"value": INT, "children": {"type": "array", "maxItems": 2, "items": obj(
        {"value": INT})}})),
    ("a key/value pair with a nullable note", obj({"key": S, "value": {"type": ["integer", "null"]},
                                                   "note": {"type": ["string", "null"], "maxLength": 8}},
                                                  required=["key", "value"])),
]


def prompt(what: str, schema: dict) -> str:
    import json
    return f"Give {what} as JSON matching this schema: {json.dumps(schema)}"
