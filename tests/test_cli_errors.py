"""Bad input ends in one line naming the problem and the fix (exit status 2), never a traceback;
a corrupt newest checkpoint or pointer falls back to the newest readable checkpoint."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import yaml

from cdrl.cli import main
from cdrl.core.config import config_from_dict
from cdrl.train.checkpoint import (
    CheckpointError,
    CheckpointFallbackWarning,
    load_latest,
    save_checkpoint,
)
from cdrl.train.trainer import train


def _write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def _cases(tmp, tiny):
    empty = tmp / "empty-run"
    empty.mkdir()
    corrupt = tmp / "corrupt-run"
    (corrupt / "checkpoints").mkdir(parents=True)
    (corrupt / "latest.json").write_text("{not json")
    good = _write(tmp / "good.yaml", tiny())
    _write(corrupt / "config.yaml", tiny())
    return {
        "schedule levels -1": (["schedule", "--levels", "-1"], "levels must be"),
        "missing config": (["train", "--config", str(tmp / "nope.yaml"), "--run-dir",
                            str(tmp / "r1")], "does not exist"),
        "invalid YAML": (["train", "--config", _write(tmp / "bad.yaml", "a: [1,\n b: 2"),
                          "--run-dir", str(tmp / "r2")], "not valid YAML"),
        "config not a mapping": (["train", "--config", _write(tmp / "list.yaml", "- 1\n"),
                                  "--run-dir", str(tmp / "r3")], "expected a mapping"),
        "unknown key": (["train", "--config", _write(tmp / "unk.yaml", tiny(colour="red")),
                         "--run-dir", str(tmp / "r4")], "colour"),
        "no CUDA": (["train", "--config", good, "--run-dir", str(tmp / "r5"), "--device",
                     "cuda"], "CUDA"),
        "sample before training": (["sample", "--run-dir", str(empty), "--num", "4", "--out",
                                    str(tmp / "s.npz")], "train it first"),
        "corrupt latest.json, nothing to fall back to": (
            ["sample", "--run-dir", str(corrupt), "--num", "4", "--out", str(tmp / "s.npz")],
            "no other readable checkpoint"),
        "missing samples": (["evaluate", "--samples", str(tmp / "none.npz"), "--reference",
                             str(tmp / "none2.npz"), "--out", str(tmp / "m.json")], "none"),
    }


@pytest.mark.parametrize("name", ["schedule levels -1", "missing config", "invalid YAML",
                                  "config not a mapping", "unknown key", "no CUDA",
                                  "sample before training",
                                  "corrupt latest.json, nothing to fall back to",
                                  "missing samples"])
def test_bad_input_is_one_line(name, tmp_path, tiny_config_dict, capsys, monkeypatch):
    if name == "no CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.delenv("CDRL_TRACEBACK", raising=False)
    argv, expect = _cases(tmp_path, tiny_config_dict)[name]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith(f"cdrl {argv[0]}: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0]) and expect in errors[0], err


def test_traceback_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("CDRL_TRACEBACK", "1")
    with pytest.raises(ValueError, match="levels"):
        main(["schedule", "--levels", "-1"])


def test_truncated_latest_checkpoint_falls_back(tmp_path):
    save_checkpoint(tmp_path, 2, {"iteration": 2, "w": torch.ones(3)})
    save_checkpoint(tmp_path, 4, {"iteration": 4, "w": torch.full((3,), 4.0)})
    newest = tmp_path / "checkpoints" / "ckpt-00000004.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    with pytest.warns(CheckpointFallbackWarning, match="ckpt-00000002.pt"):
        state = load_latest(tmp_path)
    assert state["iteration"] == 2 and torch.equal(state["w"], torch.ones(3))


def test_corrupt_pointer_falls_back(tmp_path):
    save_checkpoint(tmp_path, 2, {"iteration": 2})
    save_checkpoint(tmp_path, 4, {"iteration": 4})
    (tmp_path / "latest.json").write_text('{"iteration": 4, "pa')
    with pytest.warns(CheckpointFallbackWarning, match="corrupt"):
        assert load_latest(tmp_path)["iteration"] == 4


def test_no_readable_checkpoint_is_an_error(tmp_path):
    save_checkpoint(tmp_path, 2, {"iteration": 2})
    (tmp_path / "checkpoints" / "ckpt-00000002.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no other readable checkpoint"):
        load_latest(tmp_path)


def test_training_resumes_past_a_truncated_checkpoint(tmp_path, tiny_config_dict):
    """Straight to 8 iterations equals 6, a truncated checkpoint at 6, resume from 4 to 8."""
    cfg = config_from_dict(tiny_config_dict(train={"iterations": 8, "ckpt_every": 2,
                                                   "keep_checkpoints": 2}))
    train(cfg, tmp_path / "straight", progress=False)
    run = tmp_path / "broken"
    train(cfg, run, max_iters=6, progress=False)
    ckpt = run / "checkpoints" / "ckpt-00000006.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        train(cfg, run, progress=False)
    assert any(issubclass(w.category, CheckpointFallbackWarning) for w in seen)
    a, b = load_latest(tmp_path / "straight"), load_latest(run)
    assert a["iteration"] == b["iteration"] == 8
    for key, val in a["method"]["ebm"].items():
        if isinstance(val, torch.Tensor):
            assert torch.equal(val, b["method"]["ebm"][key]), key
    lines = [json.loads(ln)["iteration"] for ln in (run / "stats.jsonl").read_text().splitlines()]
    assert lines == sorted(set(lines)), lines  # the repeated iterations are logged once


def test_help_names_every_command():
    """``cdrl --help`` prints the module docstring: it lists every subcommand there is."""
    import argparse

    import cdrl.cli

    parser = cdrl.cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(sub.choices) >= 13
    missing = [c for c in sub.choices if f"cdrl {c} " not in cdrl.cli.__doc__]
    assert not missing, missing
