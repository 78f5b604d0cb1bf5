"""sharpDARTS' space searches end to end with its Max-W weighting and cosine power annealing."""

import json

import pytest
from typer.testing import CliRunner

from nasc.cli import app


@pytest.mark.slow
def test_sharpdarts_space_searches_end_to_end(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", "spaces/sharpdarts.nas", "--set", "C=4", "--set", "layers=5",
                                      "--epochs", "2", "--batch", "32", "--opt", "train_portion=0.2",
                                      "--opt", "warmup=0", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["relax"]["options"]["weighting"] == "max_w"
    assert config["search"]["schedule"] == "cosine_power"
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert epochs[0]["lr"] == pytest.approx(0.025) and epochs[1]["lr"] == pytest.approx(1e-4)
    assert json.loads((run / "genotype.json").read_text())["cells"]
