"""The config: schema validation with defaults filled in, preset merging, and run ids.

Validation happens once, when Snakemake parses the workflow, so a bad value stops the run
before any job starts. Errors name the key (as a dotted path) and what is allowed.

Beyond JSON Schema: keys are strings; integers are ints (not 2.0) of at most MAX_INTEGER unless
the key sets its own `maximum`; numbers are finite unless the key says `x-nonfinite: true` (free
text needs no check: figures draw it as written, plots.py turns mathtext off). Two keywords of our own: on an
object, `x-references: {a.b: c.name}` (every value at a.b is the name of some item of c), and on
a list, `x-unique: [id]` (no two items share an id).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config value the schema does not allow."""


# The config schema of this checkout (the pipeline passes its own path; the library's run
# definitions, trainfail.run_settings, are read from here by default).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def load_yaml(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def merge(base: dict, overlay: dict) -> dict:
    """Recursive dict merge, as Snakemake does for `--configfile` overlays."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# An integer larger than this can only be a mistake (a seed, a width, a number of steps): torch and
# numpy take 32-bit seeds and sizes, and 2**31 updates would never finish. A key that needs more
# says so with its own `maximum`.
MAX_INTEGER = 2**31 - 1


def _integer(checker, value) -> bool:
    """JSON Schema counts 2.0 and 1e300 as integers; a job does not (range(2.0) fails): only int is."""
    return isinstance(value, int) and not isinstance(value, bool)


def _lookup(node: Any, path: str) -> list:
    """The values at a dotted `path` below `node`, fanning out over lists: `optimizers.name` is
    the name of every optimizer."""
    values = [node]
    for part in path.split("."):
        nxt = []
        for v in values:
            for item in (v if isinstance(v, list) else [v]):
                if isinstance(item, dict) and part in item:
                    nxt.append(item[part])
        values = nxt
    return [x for v in values for x in (v if isinstance(v, list) else [v])]


def _with_defaults(validator_class):
    """A validator that fills `default` values into the instance while validating (a required key
    that has a default is never missing), and checks what JSON Schema does not: integers are
    ints, numbers are finite, free text is drawable, names refer to something (`x-references`)
    and are unique (`x-unique`)."""
    validate_properties = validator_class.VALIDATORS["properties"]
    validate_type = validator_class.VALIDATORS["type"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                # `x-unless: other`: the default applies only where `other` is absent
                if "default" in sub and name not in instance and sub.get("x-unless") not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    def required(validator, names, instance, schema):
        if isinstance(instance, dict):
            props = schema.get("properties", {})
            for name in names:
                if name not in instance and "default" not in props.get(name, {}):
                    yield jsonschema.ValidationError(f"{name!r} is a required property", validator_value=name)

    def checked_type(validator, types, instance, schema):
        errors = list(validate_type(validator, types, instance, schema))
        yield from errors
        if errors:
            return
        if isinstance(instance, float) and not math.isfinite(instance) and not schema.get("x-nonfinite"):
            yield jsonschema.ValidationError("not finite", validator="finite", validator_value=None)
        elif _integer(None, instance) and abs(instance) > MAX_INTEGER and "maximum" not in schema:
            yield jsonschema.ValidationError("too large", validator="maximum", validator_value=MAX_INTEGER)

    def references(validator, refs, instance, schema):
        if isinstance(instance, dict):
            for source, target in refs.items():
                known = _lookup(instance, target)
                for name in _lookup(instance, source):
                    if name not in known:
                        yield jsonschema.ValidationError(
                            f"{name!r} is not one of {target}", path=source.split("."), instance=name,
                            validator="x-references", validator_value=(target, known))

    def unique(validator, fields, instance, schema):
        if isinstance(instance, list):
            for field in fields:
                seen = [item.get(field) for item in instance if isinstance(item, dict)]
                for i, value in enumerate(seen):
                    if value is not None and value in seen[:i]:
                        yield jsonschema.ValidationError(
                            f"duplicate {field} {value!r}", path=[i, field], instance=value,
                            validator="x-unique", validator_value=field)

    checker = validator_class.TYPE_CHECKER.redefine("integer", _integer)
    return jsonschema.validators.extend(
        validator_class, {"properties": set_defaults, "required": required, "type": checked_type,
                          "x-references": references, "x-unique": unique}, type_checker=checker)


_Validator = _with_defaults(jsonschema.Draft7Validator)


def make_validator(schema: dict) -> jsonschema.protocols.Validator:
    """A validator of ours (defaults filled in, the checks above) for `schema`."""
    return _Validator(schema)


def describe_errors(errors: list[jsonschema.ValidationError], most: int = 5) -> str:
    """The errors as lines `  key.path: expected ... (got ...)`, the shallowest first."""
    lines = []
    for error in sorted(errors, key=lambda e: (len(e.absolute_path), str(e.absolute_path)))[:most]:
        got = error.instance if error.validator != "additionalProperties" else None
        shown = "" if got is None or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {_key_path(error)}: expected {_allowed(error)}{shown}")
    return "\n".join(lines)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # the offending key is in the message, not the path
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        parts += extra[:1]
    if error.validator == "required":  # the missing key: ours carries its name
        parts.append(str(error.validator_value))
    return ".".join(parts) or "(top level)"


def _allowed(error: jsonschema.ValidationError) -> str:
    schema = error.schema
    if error.validator == "enum":
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    if error.validator == "additionalProperties":
        return "one of " + ", ".join(repr(k) for k in sorted(schema.get("properties", {})))
    if error.validator == "type":
        if schema["type"] == "integer" and isinstance(error.instance, float) and error.instance.is_integer():
            return "a value of type integer (write it without a decimal point or exponent)"
        return f"a value of type {schema['type']}"
    if error.validator == "finite":
        return "a finite number (NaN and infinity are not allowed here)"
    if error.validator == "maximum" and schema.get("maximum") is None:
        return f"an integer of at most {MAX_INTEGER} (a larger one can only be a mistake)"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"a number with {error.validator} {error.validator_value}"
    if error.validator in ("minItems", "maxItems", "uniqueItems"):
        return f"a list with {error.validator} {error.validator_value}"
    if error.validator == "required":
        return "this key (it is required and has no default)"
    if error.validator == "x-references":
        target, known = error.validator_value
        return f"a name from {target}: one of " + (", ".join(repr(k) for k in known) or "(none configured)")
    if error.validator == "anyOf" and all(list(alt) == ["required"] for alt in error.validator_value):
        return "one of the keys " + " or ".join(repr(k) for alt in error.validator_value for k in alt["required"])
    if error.validator == "const":
        return f"the value {error.validator_value!r}"
    if error.validator == "x-unique":
        return f"a value of {error.validator_value!r} that no other item of this list has"
    return f"{error.validator} {error.validator_value!r}"


def non_string_keys(node: Any, path: tuple = ()) -> list[str]:
    """Dotted paths of mapping keys that are not strings. YAML reads `on:`, `yes:`, `no:` as
    booleans and `1:` as an integer; JSON Schema cannot even look such a key up."""
    bad = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*path, str(key))
            if not isinstance(key, str):
                bad.append(".".join(here) + f" (the key {key!r} is not a string: quote it)")
            bad += non_string_keys(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad += non_string_keys(value, (*path, str(i)))
    return bad


def load_schema(schema_path: str | Path) -> dict:
    """The config schema, composed: the top-level file holds the shared keys and definitions,
    and each experiment's block is its own file, experiments/<id>.schema.yaml beside it (its
    `$ref`s point into the top-level file's definitions). An experiment left out of the config
    gets its defaults: every experiment with a schema file is configured."""
    schema = load_yaml(schema_path)
    folder = Path(schema_path).parent / "experiments"
    experiments = schema["properties"]["experiments"]
    for path in sorted(folder.glob("*.schema.yaml")):
        block = load_yaml(path)
        block.setdefault("default", {})
        experiments.setdefault("properties", {})[path.name.removesuffix(".schema.yaml")] = block
    return schema


def validate(config: dict, schema_path: str | Path) -> dict:
    """Validate `config` in place against the schema, filling defaults. Returns the config.

    Raises ConfigError naming the first offending key and the allowed values.
    """
    keys = non_string_keys(config)
    if keys:
        raise ConfigError("invalid config: keys must be strings (YAML reads on/off/yes/no/true/false as "
                          "booleans and 1 as a number; quote the key):\n" + "\n".join(f"  {k}" for k in keys))
    schema = load_schema(schema_path)
    validator = _Validator(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        raise ConfigError("invalid config:\n" + describe_errors(errors))
    return config


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_id(settings: dict) -> str:
    """A run's identity is a hash of its settings: a changed setting is a new run."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]
