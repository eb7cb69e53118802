"""The workflow configuration is validated against config/schema.yaml with clear messages."""

import subprocess
import sys

import pytest
import yaml

from micml import catalog
from micml.config import DEFAULT_CONFIG_PATH, SCHEMA_PATH, ConfigError, load_config, validate


def default_config():
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def test_default_config_is_valid_and_gets_defaults():
    config = load_config()
    assert set(config["datasets"]) >= {"synthetic"}
    assert config["paths"]["raw"] == "resources/raw"
    assert config["datasets"]["synthetic"]["convert"] == {}


def every_property_schema(schema):
    for name, sub in schema.get("properties", {}).items():
        yield name, sub
        yield from every_property_schema(sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from every_property_schema(extra)


def test_every_schema_key_has_description_and_default():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    for name, sub in every_property_schema(schema):
        assert "description" in sub, f"schema key {name!r} lacks a description"
        assert "default" in sub, f"schema key {name!r} lacks a default"


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda c: c["datasets"]["synthetic"].update(format="mp4"), "invalid value at 'datasets.synthetic.format'"),
        (lambda c: c["synthetic"].update(seed="zero"),
         "invalid value at 'synthetic.seed': 'zero' is not of type 'integer'"),
        (lambda c: c.update(dataset={}), "unknown key 'dataset'; did you mean 'datasets'?"),
        (lambda c: c["datasets"].update({"bad name": {"format": "viso", "source": "archive"}}), "does not match"),
    ],
)
def test_bad_config_names_the_key(mutate, fragment):
    config = default_config()
    mutate(config)
    with pytest.raises(ConfigError) as error:
        validate(config, source="config.yaml")
    assert fragment in str(error.value)
    assert str(error.value).startswith("config.yaml: ") and "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["config/paper.yaml", ".test/config.yaml"])
def test_shipped_profiles_are_valid(name):
    load_config(SCHEMA_PATH.parent.parent / name)


def test_schema_training_defaults_are_the_engine_defaults():
    """One source of truth: the schema documents the engine's defaults, it does not set others."""
    from micml.engine.config import DEFAULTS

    training = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["training"]["properties"]
    for key, schema in training.items():
        # per_model and pretrained are the workflow's: micml.engine.launch lays per_model over the
        # shared keys and makes pretrained the model's build option (model_options.pretrained).
        if key not in ("per_model", "pretrained"):
            assert schema["default"] == DEFAULTS[key], key


def test_schema_testing_defaults_are_the_inference_defaults():
    from micml.inference.predict import predict_split
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(predict_split).parameters.items()}
    testing = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["testing"]["properties"]
    for key in ("tile", "overlap", "top_k", "soft_nms", "compile"):
        assert testing[key]["default"] == defaults[key], key


def test_schema_enums_are_the_catalog_names():
    """The schema cannot import Python, so it repeats micml.catalog's variant and format names;
    they must agree, in order."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]
    models = schema["models"]
    assert models["items"]["enum"] == list(catalog.VARIANTS), (
        "config/schema.yaml `models.items.enum` differs from micml/catalog.py: copy micml.catalog.VARIANTS there")
    assert set(models["default"]) <= set(catalog.VARIANTS)
    formats = schema["datasets"]["additionalProperties"]["properties"]["format"]["enum"]
    assert formats == list(catalog.FORMATS), (
        "config/schema.yaml `datasets.*.format.enum` differs from micml/catalog.py: copy micml.catalog.FORMATS there")


TORCH_FREE_MODULES = ["micml.catalog", "micml.layout", "micml.tables", "micml.detections", "micml.evaluation",
                      "micml.evaluation.evaluate", "micml.evaluation.protocols", "micml.evaluation.paper",
                      *[f"micml.evaluation.paper.{name}" for name in ("runs", "aggregate", "display", "main", "paired",
                                                                       "per_video", "ablation", "efficiency")],
                      "micml.evaluation.plots",
                      *[f"micml.evaluation.plots.{name}" for name in ("common", "curves", "training", "qualitative")]]


@pytest.mark.parametrize("module", TORCH_FREE_MODULES)
def test_names_and_evaluation_import_without_torch(module):
    """The workflow and the evaluate env (no torch) import these."""
    check = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", check], check=True, cwd=SCHEMA_PATH.parent.parent)


def test_inference_imports_nothing_from_the_engine():
    """Inference reads checkpoints through micml.checkpoint; training code is not its dependency."""
    check = ("import sys, micml.inference, micml.checkpoint; "
             "engine = sorted(m for m in sys.modules if m.startswith('micml.engine')); assert not engine, engine")
    subprocess.run([sys.executable, "-c", check], check=True, cwd=SCHEMA_PATH.parent.parent)


def test_training_config_fields_are_the_schema_training_keys():
    """The engine's defaults come from config/schema.yaml only: every TrainingConfig field has one there."""
    from dataclasses import fields

    from micml.config import training_defaults
    from micml.engine.config import TrainingConfig

    assert sorted(field.name for field in fields(TrainingConfig)) == sorted(training_defaults())
    assert TrainingConfig.from_mapping({}).as_dict() == training_defaults() | {"crop_size": [96, 96]}


def test_inference_imports_nothing_from_evaluation():
    """Inference writes detections through micml.detections; evaluation reads them the same way."""
    import ast

    package = SCHEMA_PATH.parent.parent / "micml" / "inference"
    crossing = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            crossing += [f"{path.name}: {name}" for name in names if name.startswith("micml.evaluation")]
    assert crossing == [], "inference imports evaluation; move what it needs into micml.detections"


def _docstring_nodes(tree):
    """The string constants that are docstrings (module, class, function), which may name variants."""
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                yield first.value


def test_variant_names_are_literals_only_in_the_catalog():
    """A new or renamed variant is one edit in micml/catalog.py, not a hunt through the package.

    "micml" is also the package's name (versions, program name), so it is not counted."""
    import ast

    names = set(catalog.VARIANTS) - {"micml"}
    package = SCHEMA_PATH.parent.parent / "micml"
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "catalog.py" and path.parent == package:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node) for node in _docstring_nodes(tree)}
        found += [f"{path.relative_to(package)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings]
    assert found == [], "read these names from micml.catalog"
