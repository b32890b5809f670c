"""The training command line: --config FILE with flags over it, help text with every
flag's default, a missing TensorBoard said once."""
import json
import sys

import pytest
import torch

from cola_fast.train import build_parser, main as train_main, train


def test_config_file_is_read_and_flags_override_it(tiny_run, tmp_path):
    run, _, _ = tiny_run
    args = build_parser().parse_args(["--config", str(run / "config.json"), "--steps", "7",
                                      "--set", "lr=0.5"])
    from cola_fast.train import config_from_args
    cfg = config_from_args(args)
    saved = json.loads((run / "config.json").read_text())
    assert cfg.preset == "tiny" and cfg.steps == 7 and cfg.lr == 0.5
    assert {k: v for k, v in cfg.to_dict().items() if k not in ("steps", "lr")} == \
        {k: v for k, v in saved.items() if k not in ("steps", "lr")}


@pytest.mark.parametrize("content,msg", [("{", "not valid JSON"), ('{"stepz": 3}', "unknown config fields"),
                                         ("[1]", "JSON object"), ('{"feature_fps": -1}', "feature_fps"),
                                         ('{"compile": "yes"}', "compile")])
def test_bad_config_file_fails_clearly(tmp_path, capsys, content, msg):
    f = tmp_path / "c.json"
    f.write_text(content)
    assert train_main(["--config", str(f), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert msg in err and str(f) in err


def test_every_train_flag_has_help_with_its_default():
    for action in build_parser()._actions:
        if action.dest == "help":
            continue
        assert action.help and "default" in action.help, f"{action.option_strings} lacks help with a default"


def test_missing_tensorboard_is_said_once(cache, tmp_path, monkeypatch, capsys, quick):
    """Said once on the console with the run's other messages (not with --quiet, whose stderr
    holds only what a user must act on)."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "run"
    train(quick(), out)
    said = capsys.readouterr().out
    assert said.count("TensorBoard is not available") == 1 and str(out / "metrics.jsonl") in said
    train(quick(), tmp_path / "quiet", quiet=True)
    assert "TensorBoard" not in capsys.readouterr().err
