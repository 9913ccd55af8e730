"""The config: schema validation with defaults filled in, preset merging, and run ids.

Validation happens once, when Snakemake parses the workflow, so a bad value stops the run
before any job starts. Errors name the key (as a dotted path) and what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config value the schema does not allow."""


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


def _with_defaults(validator_class):
    """A validator that fills `default` values into the instance while validating. A required key
    that has a default is never missing (it is filled, whichever keyword is checked first)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    def required(validator, names, instance, schema):
        if isinstance(instance, dict):
            props = schema.get("properties", {})
            for name in names:
                if name not in instance and "default" not in props.get(name, {}):
                    yield jsonschema.ValidationError(f"{name!r} is a required property", validator_value=name)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults, "required": required})


_Validator = _with_defaults(jsonschema.Draft7Validator)


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
        return f"a value of type {schema['type']}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"a number with {error.validator} {error.validator_value}"
    if error.validator in ("minItems", "maxItems", "uniqueItems"):
        return f"a list with {error.validator} {error.validator_value}"
    if error.validator == "required":
        return "this key (it is required and has no default)"
    return f"{error.validator} {error.validator_value!r}"


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
    schema = load_schema(schema_path)
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        lines = []
        for error in errors[:5]:
            got = error.instance if error.validator != "additionalProperties" else None
            shown = "" if got is None or isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  {_key_path(error)}: expected {_allowed(error)}{shown}")
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    return config


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_id(settings: dict) -> str:
    """A run's identity is a hash of its settings: a changed setting is a new run."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]
