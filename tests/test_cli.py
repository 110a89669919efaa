"""CLI smoke tests: --print-config, --set overrides, config errors exit 2 naming the key."""

import subprocess
import sys

import pytest
import yaml

from instvl.cli import COMMANDS, build_parser, main


def test_help_lists_every_group(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(group in out for group in ("datasets", "annotate", "qa", "train", "demo"))
    assert len({(c.group, c.name) for c in COMMANDS}) == len(COMMANDS)


def test_print_config_with_positional_and_set(capsys, tmp_path):
    assert main(["datasets", "validate", str(tmp_path), "--set", "max_errors=5", "--set", "check_media=true",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["root"] == str(tmp_path)
    assert printed["max_errors"] == 5 and printed["check_media"] is True


def test_option_shorthand(capsys, tmp_path):
    assert main(["datasets", "inspect", str(tmp_path), "--html", "out.html", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["html"] == "out.html"


def test_positionals_and_options_are_taken_as_given(capsys, tmp_path):
    root = tmp_path / "it's: a [root]"
    assert main(["datasets", "inspect", str(root), "--html", "yes", "--renders", "3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["root"] == str(root) and printed["html"] == "yes" and printed["renders"] == 3
    assert main(["datasets", "validate", "1", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["root"] == "1"


def test_set_wins_over_positionals(capsys, tmp_path):
    assert main(["datasets", "validate", str(tmp_path), "--set", "root=other", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["root"] == "other"


def test_unknown_key_exits_2_naming_it(capsys, tmp_path):
    assert main(["datasets", "validate", str(tmp_path), "--set", "no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "no_such_key" in err


def test_bad_value_exits_2(capsys, tmp_path):
    assert main(["datasets", "validate", str(tmp_path), "--set", "max_errors=lots"]) == 2
    assert "max_errors" in capsys.readouterr().err


def test_unknown_preset_exits_2(capsys, tmp_path):
    assert main(["datasets", "validate", str(tmp_path), "--config", "datasets/nope"]) == 2
    assert "datasets/nope" in capsys.readouterr().err


def test_validate_and_inspect_exit_codes(make_dataset, capsys):
    root = make_dataset(per_unit=2, media_type="image", num_instances=1)
    assert main(["datasets", "validate", str(root)]) == 0
    assert main(["datasets", "inspect", str(root), "--set", "num_samples=1"]) == 0
    assert (root / "report.html").is_file()
    (root / "manifest.json").unlink()
    assert main(["datasets", "validate", str(root)]) == 1
    assert "manifest.json: missing" in capsys.readouterr().out


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "instvl", "datasets", "validate", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "not an InstVL dataset root" in result.stdout
