"""The `micml` command: every subcommand documents itself, and errors are one clear line."""

import subprocess
import sys

import pytest

from micml.cli import SUBCOMMANDS, main, parse_options


def test_every_design_subcommand_exists():
    assert {"synth", "convert", "train", "test", "detect"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help_is_complete(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: micml {name}" in text and "options:" in text
    assert SUBCOMMANDS[name][0] and len(text.split("\n\n")[1]) > 40  # a description paragraph


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "micml.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "convert" in result.stdout


def test_version_has_one_source(capsys):
    import micml

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"micml {micml.__version__}"


def test_python_dash_m_micml_is_the_command():
    result = subprocess.run([sys.executable, "-m", "micml", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "convert-checkpoint" in result.stdout
    result = subprocess.run([sys.executable, "-m", "micml", "test", "nowhere.pth", "data", "out"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


def test_parse_options_reads_json_values():
    assert parse_options(['val_videos=["001"]', "fps=10", "name=clip"]) == {
        "val_videos": ["001"], "fps": 10, "name": "clip"}
    with pytest.raises(SystemExit, match="not KEY=VALUE"):
        parse_options(["fps"])


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nothing.mp4"
    assert main(["convert", "video", str(missing), str(tmp_path / "out")]) == 1
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and str(missing) in message
    assert not (tmp_path / "out").exists()


def test_synth_then_convert_round_trip(tmp_path, capsys):
    small = ["--set", "width=32", "--set", "height=32", "--set", "n_frames=3", "--set", "n_test=1",
             "--set", "train_width=32", "--set", "train_height=32", "--set", "train_frames=3",
             "--set", "n_train=2", "--set", "n_val=1"]
    assert main(["synth", "viso", str(tmp_path / "viso"), *small]) == 0
    assert main(["convert", "viso", str(tmp_path / "viso"), str(tmp_path / "unified"),
                 "-o", 'test_videos=["002"]']) == 0
    assert (tmp_path / "unified" / "annotations" / "test.json").is_file()


def test_cli_presets_are_the_generators():
    from micml.cli import PRESETS
    from micml.data.synthetic import DIFFICULTY_PRESETS

    assert PRESETS == tuple(DIFFICULTY_PRESETS)


def test_cli_amp_choices_are_the_precision_modules():
    from micml.cli import AMP_CHOICES
    from micml.precision import AMP_DTYPES

    assert AMP_CHOICES == tuple(AMP_DTYPES)
