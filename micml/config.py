"""Load and validate the workflow configuration against config/schema.yaml.

The Snakefile validates with Snakemake's `validate` on the same schema; this module gives the
`micml` command and the tests the same check, with defaults filled in.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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
             source: str | Callable[[Sequence[str]], str] = "config") -> dict:
    """Return a copy of `config` with schema defaults filled in, or raise ConfigError.

    `source` names where the settings came from: a file name, or a function of a key's path
    (e.g. ('training', 'lr')) that names the file or option which set that key. Text values where
    the schema wants a number, boolean, null or list are parsed first: Snakemake passes nested
    `--config` values as text (`--config 'training={lr: 0.001}'`).
    """
    schema = schema if schema is not None else load_schema()
    config = parse_text_values(copy.deepcopy(dict(config)), schema)
    validator_class = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(validator_class)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(describe_error(error, source))
    check_per_model(config, schema, source)
    return config


def _origin(source: str | Callable[[Sequence[str]], str], path: Sequence) -> str:
    return source([str(part) for part in path]) if callable(source) else source


def describe_error(error: jsonschema.exceptions.ValidationError, source, prefix: Sequence[str] = ()) -> str:
    """One line: where, which key, what is wrong, and for a misspelled key the nearest valid names."""
    path = [*prefix, *(str(part) for part in error.absolute_path)]
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        valid = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(valid))
        return unknown_key_message(source, path, unknown[0], valid)
    key = ".".join(path) or "<top level>"
    return f"{_origin(source, path)}: invalid value at '{key}': {error.message}"


def unknown_key_message(source, path: Sequence[str], key: str, valid: Sequence[str]) -> str:
    where = [*path, str(key)]
    near = difflib.get_close_matches(str(key), list(valid), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(name) for name in near)}? " if near else ""
    return f"{_origin(source, where)}: unknown key '{'.'.join(where)}'; {hint}(valid here: {', '.join(valid)})"


def check_per_model(config: Mapping[str, Any], schema: Mapping[str, Any], source) -> None:
    """`training.per_model`: known variants only, each entry valid training keys whose values,
    laid over the shared training settings, pass the training schema."""
    training_schema = schema.get("properties", {}).get("training")
    per_model = config.get("training", {}).get("per_model") or {}
    if not training_schema or not per_model:
        return
    variants = schema["properties"]["models"]["items"]["enum"]
    keys = sorted(set(training_schema["properties"]) - {"per_model"})
    shared = {key: value for key, value in config["training"].items() if key != "per_model"}
    checker = jsonschema.validators.validator_for(training_schema)(training_schema)
    for model, entry in per_model.items():
        path = ["training", "per_model", str(model)]
        if model not in variants:
            raise ConfigError(unknown_key_message(source, path[:-1], model, variants))
        unknown = sorted(set(entry) - set(keys))
        if unknown:
            raise ConfigError(unknown_key_message(source, path, unknown[0], keys))
        # The shared settings passed already, so what fails here is the entry's own value.
        error = jsonschema.exceptions.best_match(checker.iter_errors({**shared, **entry}))
        if error is not None:
            raise ConfigError(describe_error(error, source, prefix=path))


def parse_text_values(value: Any, schema: Mapping[str, Any]) -> Any:
    """`value` with text parsed where `schema` does not take text (see `validate`)."""
    if isinstance(value, str) and not _takes_text(schema, value):
        return _parse_text(value)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {key: parse_text_values(item, properties.get(key, extra if isinstance(extra, Mapping) else {}))
                for key, item in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [parse_text_values(item, schema["items"]) for item in value]
    return value


def _takes_text(schema: Mapping[str, Any], text: str) -> bool:
    if "enum" in schema:
        return text in schema["enum"]
    types = schema.get("type")
    return types is None or "string" in ([types] if isinstance(types, str) else types)


def _parse_text(text: str) -> Any:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # the schema check then names the key and the type it needs


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> dict:
    config = load_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, found {type(config).__name__}")
    return validate(config, source=str(path))


def validate_workflow_config(config: Mapping[str, Any], files: Sequence[Path | str],
                             command_line: Mapping[str, Any]) -> dict:
    """The Snakefile's check: `config` merged by Snakemake from `files` (in order) and the
    `--config` values `command_line`; an error names the one of them that set the bad key."""
    return validate(config, source=origin_finder(files, command_line))


def origin_finder(files: Sequence[Path | str], command_line: Mapping[str, Any]) -> Callable[[Sequence[str]], str]:
    """path of a key -> '--config', or the last of `files` that sets it, or the schema's default."""
    layers = [(str(path), load_yaml(path) or {}) for path in files]
    layers.append(("--config", dict(command_line)))

    def origin(path: Sequence[str]) -> str:
        for name, document in reversed(layers):
            if _sets(document, path):
                return name
        return f"{SCHEMA_PATH.name} (a default)"

    return origin


def _sets(document: Any, path: Sequence[str]) -> bool:
    for part in path:
        if not isinstance(document, Mapping) or part not in document:
            return False
        document = document[part]
    return True


def command_line_training(command_line: Mapping[str, Any]) -> dict:
    """The training keys given with `--config` (they win over per_model, as `micml train --set`),
    parsed like the rest of the config."""
    training = dict((command_line or {}).get("training") or {})
    training.pop("per_model", None)
    schema = load_schema()["properties"]["training"]
    return parse_text_values(training, schema)


#: Keys of the workflow's `training` section that are the workflow's, not the engine's:
#: micml.engine.launch lays per_model over the shared keys and makes pretrained a build option.
WORKFLOW_TRAINING_KEYS = ("per_model", "pretrained")


def training_defaults(schema: Mapping[str, Any] | None = None) -> dict:
    """Every training setting of micml.engine with its default, in the schema's order: the
    workflow's `training` keys, then the engine's others (`$defs/engine_training`)."""
    schema = schema if schema is not None else load_schema()
    sections = (schema["properties"]["training"]["properties"], schema["$defs"]["engine_training"]["properties"])
    return {key: copy.deepcopy(entry["default"]) for section in sections for key, entry in section.items()
            if key not in WORKFLOW_TRAINING_KEYS}


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
