"""The benchmark scripts run, on a tiny supernet, and their JSON says what the docs say of them.

The figures in docs/performance.md come from these scripts on real sizes; here
they run at C = 2 so that a broken script is found before a GPU session is
spent on it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--C", "2", "--layers", "2"]

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_search_step_measures_each_lowering_and_recompute_keeps_less(tmp_path):
    result = _run("search_step.py", *TINY, "--size", "8", "--batches", "4", "--repeats", "1", "--only", "softmax",
                  "--lowerings", "plain", "recompute", "fused", "optimised", out=tmp_path / "step.json")
    rows = {r["lowering"]: r for r in result["rows"]}
    assert set(rows) == {"plain", "recompute", "fused", "optimised"}
    assert all("error" not in r and r["step_seconds_median"] > 0 for r in rows.values())
    assert rows["recompute"]["memory_bytes"] < rows["fused"]["memory_bytes"] < rows["plain"]["memory_bytes"]
    assert rows["optimised"]["memory_bytes"] <= rows["recompute"]["memory_bytes"]
    assert result["machine"]["torch"] and result["input"] == [3, 8, 8]


def test_kernel_count_counts_fewer_operators_for_fused_groups(tmp_path):
    result = _run("kernel_count.py", *TINY, "--size", "8", "--batch", "2", "--lowerings", "plain", "fused",
                  "recompute", out=tmp_path / "ops.json")
    ops = {r["lowering"]: r["operators"] for r in result["rows"]}
    assert ops["fused"] < ops["plain"] < ops["recompute"]


def test_relaxations_measures_each_relaxation_asked_for(tmp_path):
    result = _run("relaxations.py", *TINY, "--batch", "2", "--repeats", "1", "--only", "softmax", "gumbel",
                  out=tmp_path / "relax.json")
    labels = [r["label"] for r in result["rows"]]
    assert labels == ["softmax", "gumbel(hard=True)", "gumbel(hard=False)"]
    hard, soft = result["rows"][1], result["rows"][2]
    assert hard["activation_bytes"] < soft["activation_bytes"]  # GDAS runs one candidate per edge
    assert hard["weights"] == soft["weights"] > 0


EPOCH_TINY = ["--dataset", "digits", "--set", "C=2", "--set", "layers=3", "--batch", "64"]


def test_search_epoch_times_epochs_and_projects_the_search(tmp_path):
    result = _run("search_epoch.py", *EPOCH_TINY, "--run-epochs", "2", "--epochs", "10", out=tmp_path / "epoch.json")
    assert len(result["epoch_seconds"]) == 2 and not result["interrupted"]
    assert result["projection_basis"] == "2 measured epoch(s)"
    first, later = result["epoch_seconds"]
    assert result["projected_seconds"] == pytest.approx(result["setup_seconds"] + first + 9 * later, abs=0.2)
    pace = result["step_pace"]
    assert pace["steps_seen"] == 2 * pace["steps_per_epoch"] and pace["steps_timed"] == pace["steps_seen"] - 6


def test_search_epoch_stopped_inside_the_first_epoch_still_reports_the_step_pace(tmp_path):
    """What a device call that runs out of time gets (gpu_session.sh stops stages with SIGINT).

    Started with SIGINT ignored, as a background job of a non-interactive shell is (a CI run started so
    once saw the child finish every epoch): the script must still stop on it. 50 epochs, never reached.
    """
    import signal

    out = tmp_path / "epoch.json"
    proc = subprocess.Popen([sys.executable, "benchmarks/search_epoch.py", *EPOCH_TINY, "--set", "C=4",
                             "--run-epochs", "50", "--progress", "6", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        for line in proc.stdout:
            if "epoch 1 step 6/" in line:
                proc.send_signal(signal.SIGINT)
                break
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # never leave a 50-epoch run behind
            proc.kill()
    assert proc.returncode == 0
    result = json.loads(out.read_text())
    assert result["interrupted"] and result["step_pace"]["steps_seen"] >= 6
    if not result["epoch_seconds"]:
        pace = result["step_pace"]
        assert result["projection_basis"].startswith(f"step pace only ({pace['steps_per_epoch']} steps an epoch")
        assert result["projected_seconds"] > 50 * pace["steps_per_epoch"] * pace["median_seconds"]
