import json
from pathlib import Path

from ffm_private.cli import main


def test_config_command_documents_every_section(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for section in ("[data]", "[model]", "[pretrain]", "[federated]", "[protocol]"):
        assert section in out


def test_train_then_evaluate(tiny_config, capsys):
    args = [f"data.path={tiny_config.data.path}", "data.protocol=pfedrec",  # see conftest
            "model.dim=16", "pretrain.epochs=1",
            "federated.rounds=2", "evaluation.full_ranking=false"]
    argv = ["train", "-q", "--no-privacy", "--run-dir", tiny_config.run_dir]
    for a in args:
        argv += ["--set", a]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Run summary" in out and "test_hr@10" in out
    assert main(["evaluate", "--run", tiny_config.run_dir]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["round"] == 2 and 0.0 <= metrics["test_hr@10"] <= 1.0
    # the same command again refuses to overwrite the finished run
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert Path(tiny_config.run_dir, "summary.json").exists()


def test_bad_config_exits_with_a_clear_message(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[federated]\nrounds = -1\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "federated.rounds = -1 must be >= 1" in capsys.readouterr().err


def test_bad_protocol_options_are_a_config_error(tmp_path, capsys):
    from ffm_private.cli import main

    rc = main(["train", "-q", "--no-privacy", "--run-dir", str(tmp_path / "run"),
               "--set", "protocol.name=secagg",
               "--set", "protocol.options.neighbours=-3"])
    assert rc == 2
    assert "protocol.options.neighbours" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.toml").exists()  # the directory is not claimed
