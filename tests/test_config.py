"""Config files and command-line overrides."""

import pytest

from train import TrainConfig
from ring.config import UserError, parse_config


def test_defaults_file_then_command_line(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("import math\nn_layer = 3\nlearning_rate = 6e-4\nmax_iters = 10 * 100\n_private = 1\n")
    cfg = parse_config(TrainConfig, [str(f), "--max_iters=50", "--dropout", "0.2", "--compile=true"])
    assert cfg.n_layer == 3 and cfg.learning_rate == 6e-4  # from the file
    assert cfg.max_iters == 50 and cfg.dropout == 0.2 and cfg.compile is True  # the command line wins
    assert cfg.n_head == TrainConfig().n_head  # untouched default


def test_values_are_typed_from_the_defaults(tmp_path):
    cfg = parse_config(TrainConfig, ["--batch_size=8", "--bias=False", "--learning_rate=1"])
    assert cfg.batch_size == 8 and cfg.bias is False
    assert isinstance(cfg.learning_rate, float)
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--batch_size=eight"])


@pytest.mark.parametrize("argv", [["--n_layers=2"], ["--lr=1e-3"]])
def test_unknown_command_line_key_names_the_closest(argv):
    with pytest.raises(UserError, match="did you mean"):
        parse_config(TrainConfig, argv)


def test_unknown_key_in_a_file(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("learning_rat = 1e-3\n")
    with pytest.raises(UserError, match="unknown key 'learning_rat'.*'learning_rate'"):
        parse_config(TrainConfig, [str(f)])


def test_wrong_type_in_a_file(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("n_layer = 'six'\n")
    with pytest.raises(UserError, match="n_layer"):
        parse_config(TrainConfig, [str(f)])


def test_missing_config_file():
    with pytest.raises(UserError, match="not found"):
        parse_config(TrainConfig, ["nope.py"])


def test_help_lists_every_key_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(TrainConfig, ["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for key in ("out_dir", "learning_rate", "gradient_accumulation_steps", "dtype"):
        assert f"--{key}" in text
    assert "(default: 0.001)" in text
