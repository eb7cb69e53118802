"""Misused configuration: misspelled keys, unknown models, an empty model list, nested
`--config` values, and the order in which settings win.

Each mistake is one line naming the key, the file (or `--config`) that set it and, for a
misspelling, the nearest valid names; never a dump of the whole config.
"""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from micml.config import (DEFAULT_CONFIG_PATH, ConfigError, command_line_training, load_config, origin_finder,
                          validate)
from micml.engine.launch import model_training_config

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parent.parent
TEST_CONFIG = REPO / ".test" / "config.yaml"


def default_config():
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def rejected(mutate) -> str:
    config = default_config()
    mutate(config)
    with pytest.raises(ConfigError) as error:
        validate(config, source="my.yaml")
    message = str(error.value)
    assert message.startswith("my.yaml: ") and "\n" not in message and len(message) < 400, message
    return message


def test_a_misspelled_key_names_the_nearest_valid_ones():
    message = rejected(lambda c: c["training"].update(iters_per_epok=3))
    assert "unknown key 'training.iters_per_epok'; did you mean 'iters_per_epoch'?" in message


def test_per_model_refuses_an_unknown_model():
    message = rejected(lambda c: c["training"]["per_model"].update(micmll={"epochs": 2}))
    assert "unknown key 'training.per_model.micmll'; did you mean 'micml'?" in message


def test_per_model_entries_are_checked_like_the_training_keys():
    assert "did you mean 'epochs'?" in rejected(lambda c: c["training"]["per_model"].update(micml={"epoch": 2}))
    message = rejected(lambda c: c["training"]["per_model"].update(micml={"iters_per_epoch": 0}))
    assert "invalid value at 'training.per_model.micml.iters_per_epoch'" in message


def test_an_empty_model_list_is_refused():
    assert "invalid value at 'models': [] should be non-empty" in rejected(lambda c: c.update(models=[]))


def test_text_from_the_command_line_is_parsed_where_the_schema_wants_numbers():
    config = default_config()
    config["training"].update(lr="0.002", iters_per_epoch="3", lr_steps=["4"], object_crop_prob="1e-1")
    config["testing"].update(amp="off", tile="null")
    checked = validate(config)
    assert checked["training"]["lr"] == 0.002 and checked["training"]["iters_per_epoch"] == 3
    assert checked["training"]["lr_steps"] == [4] and checked["training"]["object_crop_prob"] == 0.1
    assert checked["testing"]["amp"] == "off" and checked["testing"]["tile"] is None  # text where text is valid


def test_an_error_names_the_file_or_option_that_set_the_key(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"training": {"lr": -1}}))
    config = copy.deepcopy(default_config())
    config["training"]["lr"] = -1
    with pytest.raises(ConfigError, match=r"^.*mine\.yaml: invalid value at 'training\.lr'"):
        validate(config, source=origin_finder([DEFAULT_CONFIG_PATH, mine], {}))
    with pytest.raises(ConfigError, match=r"^--config: invalid value at 'training\.lr'"):
        validate(config, source=origin_finder([DEFAULT_CONFIG_PATH, mine], {"training": {"lr": "-1"}}))


def test_the_command_line_wins_over_per_model():
    """defaults < config file < per_model < command line (micml train --set, snakemake --config)."""
    training = {**load_config()["training"], "iters_per_epoch": 20, "per_model": {"micml": {"iters_per_epoch": 14}}}
    assert model_training_config(training, "micml", overrides={"iters_per_epoch": 2})["iters_per_epoch"] == 2
    assert model_training_config(training, "micml")["iters_per_epoch"] == 14
    assert model_training_config(training, "dsfnet")["iters_per_epoch"] == 20
    assert command_line_training({"training": {"iters_per_epoch": "2", "per_model": {}}}) == {"iters_per_epoch": 2}


def test_the_ci_config_states_a_tiny_budget_for_every_model():
    config = load_config(TEST_CONFIG)
    for model in config["models"]:
        assert model_training_config(config["training"], model)["iters_per_epoch"] == 2, model


def snakemake_dry_run(tmp_path, *args):
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n", "--configfile",
               str(TEST_CONFIG), *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_nested_config_values_work_as_in_snakemake(tmp_path):
    result = snakemake_dry_run(tmp_path, "--config", "training={lr: 0.001, iters_per_epoch: 3}", "models=[dsfnet]")
    assert result.returncode == 0, result.stderr[-3000:]
    typo = snakemake_dry_run(tmp_path, "--config", "training={iters_per_epok: 3}")
    assert typo.returncode != 0
    output = typo.stdout + typo.stderr
    assert "--config: unknown key 'training.iters_per_epok'; did you mean 'iters_per_epoch'?" in output
    assert "synthetic:" not in output  # no dump of the config


@pytest.mark.parametrize("seeds, fragment", [([], "should be non-empty"), ([0, 0], "has non-unique elements"),
                                             (["a"], "'a' is not of type 'integer'"), ([-1], "less than the minimum")])
def test_seeds_must_be_distinct_non_negative_integers(seeds, fragment):
    message = rejected(lambda c: c.update(seeds=seeds))
    assert "invalid value at 'seeds" in message and fragment in message
