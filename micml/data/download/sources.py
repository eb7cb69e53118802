"""The catalogue of dataset sources: config/datasets.yaml, checked against its schema.

config/datasets.schema.yaml states what an entry holds; `load_sources` validates the file with
jsonschema and turns the first violation into one line naming the file, the key and, from the
failed rule's `description`, what to write instead. Two path rules stay in code, where a regular
expression would state them badly: a file `name` must be a plain name (`micml.paths.plain_name`)
and `extract_to` must stay inside the tree (the rule `unpack` applies to archive members).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from micml.config import REPO_ROOT, unknown_key_message
from micml.data.download.errors import SourceError
from micml.data.download.unpack import relative_parts
from micml.paths import UnsafePathError, plain_name

SCHEMA_PATH = REPO_ROOT / "config" / "datasets.schema.yaml"


@functools.cache
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


#: The keys every dataset entry and every file of one must have (the schema's `required`).
DATASET_KEYS: tuple[str, ...] = tuple(load_schema()["$defs"]["dataset"]["required"])
FILE_KEYS: tuple[str, ...] = tuple(load_schema()["$defs"]["file"]["required"])


def load_sources(path: Path | str) -> dict[str, dict]:
    """Read config/datasets.yaml and return {dataset: entry}, every entry checked."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SourceError(f"{path}: cannot read the dataset sources ({error}); restore the file from git") from None
    check_sources(path, document)
    return document["datasets"]


def check_sources(path: Path, document: Any) -> None:
    """SourceError describing the first rule `document` (read from `path`) breaks."""
    schema = load_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise SourceError(describe_violation(path, error))
    for name, entry in document["datasets"].items():
        for number, spec in enumerate(entry["files"]):
            _check_file_paths(path, f"datasets.{name}.files.{number}", spec)


def describe_violation(path: Path, error: jsonschema.exceptions.ValidationError) -> str:
    """One line: the file, the key, what is wrong, and what the schema expects there."""
    keys = [str(part) for part in error.absolute_path]
    if error.validator == "additionalProperties":
        valid = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(valid))
        return unknown_key_message(str(path), keys, unknown[0], valid)
    where = ".".join(keys) or "<top level>"
    expected = error.schema.get("description", "what config/datasets.schema.yaml says")
    if error.validator == "required":
        missing = [key for key in error.schema["required"] if key not in error.instance]
        return f"{path}: '{where}': missing key(s) {', '.join(missing)}; expected {expected}"
    # A pattern's own message would quote the regular expression; the description says it in words.
    problem = f"{error.instance!r} has the wrong form" if error.validator == "pattern" else error.message
    return f"{path}: invalid value at '{where}': {problem}; expected {expected}"


def _check_file_paths(path: Path, key: str, spec: dict) -> None:
    try:
        plain_name(spec["name"], option=f"{key}.name")
    except UnsafePathError as error:
        raise SourceError(f"{path}: {error} (it is placed directly under the raw folder)") from None
    try:
        relative_parts(spec["extract_to"], what=f"{path}: {key}.extract_to")
    except SourceError as error:
        raise SourceError(f"{error}; give a folder inside the tree ('.' = the root)") from None
