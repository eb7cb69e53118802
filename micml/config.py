"""Load and validate the workflow configuration against config/schema.yaml.

The Snakefile validates with Snakemake's `validate` on the same schema; this module gives the
`micml` command and the tests the same check, with defaults filled in.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names the key and the rule."""


def load_yaml(path: Path | str) -> Any:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None


def load_schema(path: Path | str = SCHEMA_PATH) -> dict:
    return load_yaml(path)


def validate(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None,
             source: str = "config") -> dict:
    """Return a copy of `config` with schema defaults filled in, or raise ConfigError."""
    schema = schema if schema is not None else load_schema()
    config = copy.deepcopy(dict(config))
    validator_class = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(validator_class)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        key = "/".join(str(part) for part in error.absolute_path) or "<top level>"
        raise ConfigError(f"{source}: invalid value at '{key}': {error.message}")
    return config


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> dict:
    config = load_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(config).__name__}")
    return validate(config, source=str(path))


def _with_defaults(validator_class):
    """A validator that writes each property's `default` into the instance before checking it."""
    check_properties = validator_class.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_defaults})
