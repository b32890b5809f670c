"""Results files in the ActivityNet results format that both evaluators accept (the
official CoLA one and ActivityNet's): the trainer's best_results.json and infer's output."""
import json

import numpy as np


def _accepted_by_both_evaluators(doc: dict):
    """The top-level checks of the two evaluators: official CoLA (method, results) and
    ActivityNet (version, results, external_data)."""
    for key in ("version", "method", "results", "external_data"):
        assert key in doc, f"results file lacks {key!r}"
    assert isinstance(doc["results"], dict) and isinstance(doc["external_data"], dict)


def test_training_results_file_has_the_evaluators_keys(tiny_run):
    run, _, _ = tiny_run
    _accepted_by_both_evaluators(json.loads((run / "best_results.json").read_text()))


def test_infer_results_file_and_stdout_have_the_evaluators_keys(tiny_run, tmp_path, capsys, video_features):
    from cola_fast.infer import main as infer_main
    run, _, _ = tiny_run
    f = tmp_path / "video_test_0000004.npy"
    np.save(f, video_features("video_test_0000004"))
    out = tmp_path / "dets.json"
    assert infer_main([str(run / "best.pt"), str(f), "--out", str(out)]) == 0
    _accepted_by_both_evaluators(json.loads(out.read_text()))
    capsys.readouterr()
    assert infer_main([str(run / "best.pt"), str(f)]) == 0
    _accepted_by_both_evaluators(json.loads(capsys.readouterr().out))
