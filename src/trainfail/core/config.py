"""The config: schema validation with defaults filled in, preset merging, and run ids.

Validation happens once, when Snakemake parses the workflow, so a bad value stops the run
before any job starts. Errors name the key (as a dotted path) and what is allowed.

Before JSON Schema: the config's size, counted once per node (survey): YAML aliases let a few
lines stand for billions of values, and every walk that follows them (a validator's, an error
message's repr) would never end. A config nested deeper than MAX_DEPTH, with a list longer than
MAX_LIST or standing for more than MAX_VALUES values is refused naming the key, before anything
else reads it.

Beyond JSON Schema: keys are strings; integers are ints (not 2.0), and every integer key has a
`maximum` (tests/test_config.py checks the schema for it); numbers are finite unless the key says `x-nonfinite: true` (free
text needs no check: figures draw it as written, plots.py turns mathtext off); `data_dir` is not a
file. Keywords of our own: on an object, `x-references: {a.b: c.name}` (every value at a.b is the
name of some item of c); on a list, `x-unique: [id]` (no two items share an id); beside a
`pattern`, `x-means: "..."` (what the pattern asks for, in words, for the error message).
Every error is reported, not only the first kind: a non-string key and a misspelt key beside it
are named together.
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
# definitions, trainfail.core.run_settings, are read from here by default).
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


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


def error_lines(errors) -> list[str]:
    """The errors as lines `  key.path: expected ... (got ...)`, the shallowest first, one line per
    unknown key (not only the first)."""
    lines = []
    for error in sorted(errors, key=lambda e: (len(e.absolute_path), str(e.absolute_path))):
        if error.validator == "additionalProperties":
            parts = [str(p) for p in error.absolute_path]
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            lines += [f"  {'.'.join([*parts, k])}: expected {_allowed(error)}" for k in extra]
            continue
        got = error.instance
        shown = "" if isinstance(got, dict) else f" (got {_shown(got)})"
        lines.append(f"  {_key_path(error)}: expected {_allowed(error)}{shown}")
    return lines


def capped(lines: list[str]) -> str:
    """At most MAX_SHOWN lines, then how many more."""
    more = f"\n  ... and {len(lines) - MAX_SHOWN} more" if len(lines) > MAX_SHOWN else ""
    return "\n".join(lines[:MAX_SHOWN]) + more


def describe_errors(errors) -> str:
    """error_lines, capped."""
    return capped(error_lines(errors))


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
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
    if error.validator == "pattern":
        return schema.get("x-means") or f"text matching {schema['pattern']!r}"
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


# The config's shape, before anything walks it. The largest preset (full + papers) is nested 7
# deep, its longest list holds 64 items (minimum_ratio's seeds; the schema allows 256) and it
# stands for about 1,000 values. An alias bomb (nine levels of nine aliases: 387 million values
# in a dozen lines) or a seeds list of a million items is refused here, in milliseconds.
MAX_DEPTH = 32
MAX_LIST = 1000
MAX_VALUES = 100_000


def _size_error(path: tuple, message: str) -> ConfigError:
    return ConfigError(f"invalid config:\n  {'.'.join(path) or '(top level)'}: {message}")


def survey(config: Any) -> list[str]:
    """The config's non-string keys, as dotted paths (YAML reads `on:`, `yes:`, `no:` as booleans
    and `1:` as an integer; JSON Schema cannot even look such a key up), each shared node looked at once. Raises
    ConfigError when it is nested deeper than MAX_DEPTH, holds a list longer than MAX_LIST or
    stands for more than MAX_VALUES values once YAML's aliases are expanded. Every node is visited
    once (by id), so an alias bomb costs what its text does."""
    sizes: dict[int, int] = {}
    keys: list[str] = []
    keep = []  # the nodes sized, alive while their ids are

    def size(node: Any, path: tuple) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) in sizes:
            return sizes[id(node)]
        if len(path) > MAX_DEPTH:
            raise _size_error(path[:MAX_DEPTH], f"nested deeper than {MAX_DEPTH} levels (a YAML alias inside itself?)")
        if isinstance(node, list) and len(node) > MAX_LIST:
            raise _size_error(path, f"a list of {len(node):,} items, more than the {MAX_LIST} any list of "
                                    "the config may hold (the schema gives each list its own limit)")
        total = 1
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            here = (*path, str(key))
            if isinstance(node, dict) and not isinstance(key, str):
                keys.append(".".join(here) + f" (the key {key!r} is not a string: quote it; YAML reads "
                            "on/off/yes/no/true/false as booleans and 1 as a number)")
            total += size(value, here)
        sizes[id(node)] = total
        keep.append(node)
        return total

    if size(config, ()) > MAX_VALUES:
        def big(node, path):  # the keys below which the values are: each mapping's entries over the limit
            over = [(k, v) for k, v in node.items() if isinstance(v, (dict, list)) and sizes[id(v)] > MAX_VALUES] \
                if isinstance(node, dict) else []
            return [found for k, v in over for found in big(v, (*path, str(k)))] or [(path, node)]

        raise ConfigError("invalid config:\n" + "\n".join(
            f"  {'.'.join(path) or '(top level)'}: stands for {sizes[id(node)]:,} values once YAML's aliases "
            f"(&name, *name) are expanded, more than the {MAX_VALUES:,} a config may hold" for path, node in big(config, ())))
    return keys


def _string_keyed(node: Any, seen: dict | None = None) -> Any:
    """A copy without the non-string keys (JSON Schema cannot look them up), sharing what the
    original shares, so that the rest of the config is validated all the same."""
    seen = {} if seen is None else seen
    if id(node) in seen:
        return seen[id(node)]
    if isinstance(node, dict):
        out: Any = {}
        seen[id(node)] = out
        out.update((k, _string_keyed(v, seen)) for k, v in node.items() if isinstance(k, str))
    elif isinstance(node, list):
        out = []
        seen[id(node)] = out
        out.extend(_string_keyed(v, seen) for v in node)
    else:
        out = node
    return out


def _data_dir_problem(config: dict) -> str | None:
    """data_dir must be a directory or not exist yet: a file there (or above it) would fail the
    first download with an error that looks like the network's."""
    value = config.get("data_dir")
    if not isinstance(value, str):
        return None
    path = Path(value)
    for place in (path, *path.parents):
        if place.exists():
            if place.is_dir():
                return None
            where = "" if place == path else f" (its parent {str(place)!r} is a file)"
            return f"  data_dir: expected a directory, or a path where one can be made (got {value!r}, a file{where})"
    return None


def _shown(value: Any) -> str:
    """A value in an error message, cut short: a long string or list must not flood the message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text):,} characters)"


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

    Raises ConfigError naming every offending key (up to MAX_SHOWN) and the allowed values; a
    config too large or too deep to validate (survey) is refused before the schema reads it.
    """
    keys = survey(config)
    schema = load_schema(schema_path)
    validator = _Validator(schema)
    # with a non-string key the rest is validated all the same (on a copy without it): every error at once
    checked = _string_keyed(config) if keys else config
    lines = [f"  {k}" for k in keys] + error_lines(validator.iter_errors(checked))
    if problem := _data_dir_problem(checked):
        lines.append(problem)
    if lines:
        raise ConfigError("invalid config:\n" + capped(lines))
    return config


MAX_SHOWN = 12  # error lines shown (the rest counted)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_id(settings: dict) -> str:
    """A run's identity is a hash of its settings: a changed setting is a new run."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]
