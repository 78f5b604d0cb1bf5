"""`nasc train`: the derived network, its protocol from the space's `train:` block, runs and resume."""

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasc.cli import app
from nasc.compiler.expr import CallValue
from nasc.errors import DataError, GenotypeError, SearchError
from nasc.runtime.train import TrainRequest, prepare_train, resume_train, run_train, train_config

GENOTYPES = Path(__file__).resolve().parents[2] / "examples" / "genotypes"
TINY = {"C": 4, "layers": 5}


def test_protocol_comes_from_the_train_block_and_the_command_line_wins():
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "darts_v2.json"), params=TINY,
                                     overrides={"epochs": 3}))
    cfg = job.config
    assert (cfg.batch, cfg.lr, cfg.weight_decay, cfg.clip, cfg.drop_path) == (96, 0.025, 3e-4, 5, 0.2)
    assert cfg.epochs == 3
    assert cfg.cutout == 4  # 16 from the DARTS protocol, capped at half the 8x8 digits
    assert job.ir.params["C"] == 4 and job.ir.params["layers"] == 5  # --set beats the train block's C = 36
    # the auxiliary head does not fit 8x8 digits: it is dropped, and its loss weight 0.4 with it, both said
    assert cfg.aux_weight == 0 and job.net.aux_ids == []
    warnings = job.ir.meta["warnings"]
    assert any(w.startswith("auxiliary head dropped") for w in warnings)
    assert "aux_weight 0.4 set to 0: the auxiliary head was dropped at this input size" in warnings


def test_nb201_protocol_is_the_benchmark_one_without_gradient_clipping():
    """AutoDL's 200E config and training loop: SGD Nesterov 0.1 cosine to 0, wd 5e-4, batch 256, and no
    clip_grad_norm (the space once inherited the DARTS-style default clip of 5)."""
    cfg = prepare_train(TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1})).config
    assert (cfg.epochs, cfg.batch, cfg.lr, cfg.lr_min, cfg.weight_decay, cfg.nesterov) == (200, 256, 0.1, 0.0, 5e-4, True)
    assert cfg.clip == 0 and cfg.drop_path == 0 and cfg.aux_weight == 0 and cfg.cutout == 0


@pytest.mark.parametrize("space, batch, drop_path", [("darts", 96, 0.2), ("pcdarts", 96, 0.3), ("pdarts", 128, 0.3)])
def test_each_method_trains_with_its_official_evaluation_settings(space, batch, drop_path):
    """train.py of DARTS, PC-DARTS and train_cifar.py of P-DARTS: the same protocol but for batch and drop path
    (PC-DARTS once inherited DARTS' 0.2)."""
    cfg = prepare_train(TrainRequest(genotype=str(GENOTYPES / "pcdarts.json"), space=space, params=TINY)).config
    assert (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.clip) == (600, 0.025, 3e-4, 5)
    assert (cfg.batch, cfg.drop_path) == (batch, drop_path)


@pytest.mark.parametrize("name, space, batch, drop_path", [("pdarts", "pdarts", 128, 0.3), ("pcdarts", "pcdarts", 96, 0.3)])
def test_a_published_genotype_trains_with_its_papers_protocol_without_space(name, space, batch, drop_path):
    """examples/genotypes/pdarts.json and pcdarts.json named space darts, so `nasc train` on them (as the README
    shows) ran DARTS' batch 96 and drop path 0.2, not the protocol behind the published error."""
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / f"{name}.json"), params=TINY))
    assert job.ir.name == space and (job.config.batch, job.config.drop_path) == (batch, drop_path)


def test_sharpdarts_trains_with_its_readme_protocol():
    """sharpDARTS' cnn/train.py and README: 2000 epochs, batch 64, cosine power annealing 0.025 -> 1e-8 with
    5 warm-up epochs; the space once inherited DARTS' 600 epochs, batch 96 and plain cosine to 0."""
    cfg = prepare_train(TrainRequest(genotype=str(GENOTYPES / "darts_v2.json"), space="sharpdarts",
                                     params=TINY)).config
    assert (cfg.epochs, cfg.batch, cfg.lr, cfg.schedule) == (2000, 64, 0.025, "cosine_power")
    assert (cfg.lr_min, cfg.schedule_exponent, cfg.warmup) == (1e-8, 2, 5)
    assert (cfg.weight_decay, cfg.clip, cfg.drop_path) == (3e-4, 5, 0.2)


def test_proxylessnas_trains_with_the_official_codes_defaults(tmp_path):
    """mit-han-lab/proxylessnas search/imagenet_run_exp.py and run_manager.py: 300 epochs, batch 256, SGD Nesterov
    0.05 cosine to 0, wd 4e-5, label smoothing 0.1, no clip_grad_norm. The space had no `train:` block, so a
    chain genotype was trained with DARTS' CIFAR protocol (600 epochs, batch 96, lr 0.025, wd 3e-4, clip 5)."""
    from nasc.compiler import genotype as G
    from nasc.compiler.pipeline import compile_space

    ir = compile_space("proxyless", input_shape=(3, 32, 32), params={"classes": 10})
    path = tmp_path / "chain.json"
    G.save(G.Genotype(layers=tuple((g, info["rows"][0]["ops"][0]) for g, info in ir.alpha_groups.items()),
                      space="proxyless"), path)
    cfg = prepare_train(TrainRequest(genotype=str(path), input_shape=(3, 224, 224))).config
    assert (cfg.epochs, cfg.batch, cfg.lr, cfg.momentum, cfg.nesterov) == (300, 256, 0.05, 0.9, True)
    assert (cfg.schedule, cfg.lr_min, cfg.weight_decay, cfg.label_smoothing) == ("cosine", 0.0, 4e-5, 0.1)
    assert cfg.clip == 0 and cfg.drop_path == 0 and cfg.aux_weight == 0 and cfg.cutout == 0
    assert cfg.bn_weight_decay is False  # no_decay_keys = "bn"


def test_bn_weight_decay_false_leaves_batch_norms_undecayed_as_proxylessnas_does():
    """run_manager.py puts the parameters named by no_decay_keys ("bn" by default) in a group without weight decay;
    DARTS and NAS-Bench-201 decay every parameter, batch norms included."""
    from nasc.runtime.train import Fitter

    def groups(**overrides):
        job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1},
                                         overrides={"epochs": 1, **overrides}))
        bn = {id(p) for m in job.net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
        return bn, [({id(p) for p in g["params"]}, g["weight_decay"]) for g in Fitter(job).opt.param_groups]

    bn, [(decayed, wd)] = groups()
    assert bn < decayed and wd == 5e-4
    bn, [(decayed, wd), (undecayed, zero)] = groups(bn_weight_decay=False)
    assert (undecayed, wd, zero) == (bn, 5e-4, 0.0) and decayed and not decayed & bn
    with pytest.raises(SearchError, match="bn_weight_decay must be true or false"):
        train_config({}, {"bn_weight_decay": 2})


def test_a_batch_of_one_image_that_batch_norm_cannot_normalise_is_a_clear_error(tmp_path):
    """A chain on 8x8 digits reaches a 1x1 map, where batch norm in training mode needs more than one image:
    torch's ValueError reached the command line as "internal error ... a bug in nasc"."""
    from nasc.compiler import genotype as G
    from nasc.compiler.pipeline import compile_space

    ir = compile_space("proxyless", input_shape=(3, 32, 32), params={"classes": 10})
    path = tmp_path / "chain.json"
    G.save(G.Genotype(layers=tuple((g, info["rows"][0]["ops"][0]) for g, info in ir.alpha_groups.items()),
                      space="proxyless"), path)
    result = CliRunner().invoke(app, ["train", str(path), "--batch", "1", "--epochs", "1",
                                      "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "batch norm cannot normalise a batch of one image" in result.output and "--batch" in result.output
    assert "internal error" not in result.output


def test_drop_path_on_a_chain_without_cells_is_set_to_0_and_said(tmp_path):
    """Drop path acts on cell edges only; a ProxylessNAS chain has none, so `--opt drop_path=0.2` trained without it
    and said nothing (as aux_weight on a network without an auxiliary head is set to 0 with a warning)."""
    from nasc.compiler import genotype as G
    from nasc.compiler.pipeline import compile_space

    ir = compile_space("proxyless", input_shape=(3, 32, 32), params={"classes": 10})
    G.save(G.Genotype(layers=tuple((g, info["rows"][0]["ops"][0]) for g, info in ir.alpha_groups.items()),
                      space="proxyless"), tmp_path / "chain.json")
    job = prepare_train(TrainRequest(genotype=str(tmp_path / "chain.json"), overrides={"drop_path": 0.2}))
    assert job.config.drop_path == 0
    assert ("drop_path 0.2 set to 0: network 'proxyless' has no cells (drop path acts on the edges of cells only)"
            in job.ir.meta["warnings"])
    cells = prepare_train(TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1},
                                       overrides={"drop_path": 0.2}))
    assert cells.config.drop_path == 0.2 and not any("drop_path" in w for w in cells.ir.meta["warnings"])


def test_eval_network_has_the_published_size_for_cifar_inputs():
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "darts_v2.json"), input_shape=(3, 32, 32)))
    assert job.ir.meta["costs"]["total_without_aux"]["params"] == 3_349_342
    assert sum(p.numel() for n, p in job.net.named_parameters() if not n.startswith("layers.aux")) == 3_349_342
    # the settings follow the input counted for, not the default dataset's 8x8
    assert (job.config.aux_weight, job.config.cutout) == (0.4, 16)
    assert not job.ir.meta.get("warnings")


def test_drop_path_rises_linearly_and_only_in_training(tmp_path):
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "darts_v2.json"), params=TINY,
                                     overrides={"epochs": 2, "batch": 128}))
    events = []
    run_train(job, tmp_path / "run", on_event=events.append)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["drop_path"] for e in epochs] == [0.0, pytest.approx(0.2 * 1 / 2)]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert 0 <= result["test_acc"] <= 1 and result["params"] == job.ir.meta["costs"]["total_without_aux"]["params"]
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "weights.pt", "genotype.json", "network.ir.json"):
        assert (tmp_path / "run" / name).is_file(), name


def test_evaluation_reports_top5_accuracy_as_imagenet_papers_do(tmp_path):
    """DARTS' train_imagenet.py reports top-1 and top-5; the test accuracy had only top-1."""
    from nasc.runtime.augment import Augment

    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1},
                                     overrides={"epochs": 1, "batch": 256}))
    result = run_train(job, tmp_path / "run")
    test, net = job.dataset.test, job.net.eval()
    with torch.no_grad():
        logits = net(Augment(job.dataset, train=False)(test.images).contiguous(memory_format=torch.channels_last))
    ranks = (logits > logits.gather(1, test.labels[:, None])).sum(1)  # how many classes score above the label
    assert result["test_top5"] == pytest.approx(float((ranks < 5).float().mean()))
    assert result["test_acc"] <= result["test_top5"] < 1
    epoch = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert epoch["val_top5"] == result["test_top5"]


def test_resume_ends_like_an_uninterrupted_run(tmp_path):
    request = TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1},
                           overrides={"epochs": 2, "batch": 128})
    run_train(prepare_train(request), tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run_train(prepare_train(request), tmp_path / "resumed", stop_after=1)
    resume_train(tmp_path / "resumed")
    [resumed] = [json.loads(line) for line in (tmp_path / "resumed" / "resumes.jsonl").read_text().splitlines()]
    assert (resumed["epoch"], resumed["threads"]) == (1, torch.get_num_threads())
    for name in ("metrics.jsonl", "result.json"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    a = torch.load(tmp_path / "straight" / "weights.pt")
    b = torch.load(tmp_path / "resumed" / "weights.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_keeps_the_cuda_generators_drop_path_draws_from(tmp_path, monkeypatch):
    """Drop path draws its masks on the network's device: on a GPU from the CUDA generator, which the training
    checkpoint left out (a search's has it), so a resumed GPU run dropped other paths than an uninterrupted one.
    CUDA's generator state is stood in for here, so that the check runs on a CPU too."""
    from nasc.runtime.train import Fitter

    cuda_state = [torch.tensor([1, 2, 3], dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [t.clone() for t in cuda_state])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: cuda_state.__setitem__(0, states[0].clone()))
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1},
                                     overrides={"epochs": 2, "batch": 128, "device": "cpu"}))
    saved = Fitter(job).state()
    cuda_state[0] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # the generator moved on after the checkpoint
    Fitter(job).load_state(saved)
    assert cuda_state[0].tolist() == [1, 2, 3]


def test_resume_refuses_a_train_block_edited_since_the_run_started(tmp_path, spaces_dir):
    """The settings are rebuilt from the space file's `train:` block, which the fingerprint leaves out: a resume
    after editing lr and epochs went on at the new values (config.json still saying the old), ending a run that is
    neither protocol. It is refused, naming what changed; the block restored, the run resumes."""
    import shutil

    shutil.copy(spaces_dir / "darts.nas", tmp_path / "darts.nas")
    mine = tmp_path / "mine.nas"
    block = 'space mine extends "darts.nas"\ntrain:\n    epochs = {}\n    weights = sgd(lr = {})\n'
    mine.write_text(block.format(2, 0.025))
    request = TrainRequest(genotype=str(GENOTYPES / "darts_v2.json"), space=str(mine), params={"C": 4, "layers": 3},
                           overrides={"batch": 256})
    with pytest.raises(KeyboardInterrupt):
        run_train(prepare_train(request), tmp_path / "run", stop_after=1)
    mine.write_text(block.format(3, 0.5))
    with pytest.raises(SearchError, match=r"changed since it started \(epochs 2 -> 3, lr 0.025 -> 0.5\)") as e:
        resume_train(tmp_path / "run")
    assert "train: block was edited" in e.value.hint
    mine.write_text(block.format(2, 0.025))
    assert resume_train(tmp_path / "run")["epochs"] == 2


def test_a_training_run_records_its_data_and_resume_refuses_other_data(tmp_path, mini_mnist):
    data = mini_mnist(tmp_path / "data", seed=0)
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1},
                                     overrides={"epochs": 2, "batch": 32, "dataset": "mnist", "data_dir": str(data)}))
    with pytest.raises(KeyboardInterrupt):
        run_train(job, tmp_path / "run", stop_after=1)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert recorded == {"name": "mnist", "fingerprint": job.dataset.fingerprint, "shape": [1, 8, 8], "classes": 10,
                        "train_images": 64, "test_images": 16}
    mini_mnist(data, seed=1)  # the same folder, other images
    with pytest.raises(DataError, match="other data"):
        resume_train(tmp_path / "run")


def test_cli_resumes_a_training_run_with_the_command_a_ctrl_c_names(tmp_path):
    """`nasc train --resume RUN` (what the interrupt message says) once failed: "Missing argument 'genotype'"."""
    request = TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1},
                           overrides={"epochs": 2, "batch": 256})
    with pytest.raises(KeyboardInterrupt):
        run_train(prepare_train(request), tmp_path / "cut", stop_after=1)
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cut" / "result.json").is_file()
    missing = CliRunner().invoke(app, ["train", "--epochs", "1"])
    assert missing.exit_code == 2 and "a genotype is required" in " ".join(missing.output.split())


def test_genotype_errors_are_clear(tmp_path):
    bad = json.loads((GENOTYPES / "darts_v2.json").read_text())
    bad["cells"]["normal"]["edges"][0]["op"] = "sep_conv_9x9"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(GenotypeError, match="sep_conv_9x9"):
        prepare_train(TrainRequest(genotype=str(path), params=TINY))
    with pytest.raises(GenotypeError):  # an NB201 cell on the DARTS space
        prepare_train(TrainRequest(genotype="|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|"
                                            "skip_connect~1|skip_connect~2|", space="darts", params=TINY))


def test_a_head_that_does_not_score_the_datasets_classes_is_refused_before_training():
    """classes=3 on the 10 digits was an internal IndexError in the loss at the first batch (and classes=20
    trained a network with 10 dead scores); `nasc search` already refused both."""
    nb201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    for classes in (3, 20):
        with pytest.raises(SearchError, match=f"outputs {classes} scores but digits has 10 classes") as info:
            prepare_train(TrainRequest(genotype=nb201, space="nb201", params={"C": 4, "N": 1, "classes": classes}))
        assert "leave `classes` unset" in info.value.hint


@pytest.mark.slow
def test_channels_last_trains_as_nchw_does_and_is_the_default(tmp_path):
    """The derived network runs in NHWC by default (0.77x the NCHW step of DARTS' C = 36 network on a CPU)."""
    from torch import nn

    runs = {}
    for layout in (True, False):
        job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "darts_v2.json"), params=TINY,
                                         overrides={"epochs": 1, "batch": 128, "channels_last": layout}))
        seen = []
        conv = next(m for m in job.net.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
        conv.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(
            memory_format=torch.channels_last if layout else torch.contiguous_format)))
        run_train(job, tmp_path / str(layout))
        assert seen and all(seen)  # (B, C > 1, H, W) activations: the layout is unambiguous
        runs[layout] = [json.loads(line) for line in (tmp_path / str(layout) / "metrics.jsonl").read_text().splitlines()]
    assert train_config({}, {}).channels_last is True
    epoch = {layout: next(r for r in records if r["type"] == "epoch") for layout, records in runs.items()}
    for key in ("train_loss", "val_loss"):
        assert epoch[True][key] == pytest.approx(epoch[False][key], rel=1e-3), key


def test_train_channels_last_must_be_a_boolean():
    result = CliRunner().invoke(app, ["train", str(GENOTYPES / "darts_v2.json"), "--opt", "channels_last=maybe",
                                      "--dry-run"])
    assert result.exit_code == 1 and "channels_last must be true or false" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [
    ["train", "no/such/genotype.json"],
    ["train", "Genotype(normal=[('sep_conv_3x3', 0)"],
    ["train", str(GENOTYPES / "darts_v2.json"), "--space", "nb201"],
])
def test_cli_bad_input_exits_1_without_traceback(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "error" in result.output and "Traceback" not in result.output


def test_cli_dry_run_prints_counts():
    result = CliRunner().invoke(app, ["train", str(GENOTYPES / "darts_v2.json"), "--dry-run", "--input", "3x32x32"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "3,349,342 parameters" in out and "528,359,040 multiply-adds" in out
    assert "3,825,768 with the auxiliary head" in out
    assert "input = 3x32x32" in out and "dataset =" not in out and "cutout = 16" in out and "capped" not in out


def test_a_space_the_genotype_names_but_nobody_has_says_so_and_suggests_space(tmp_path):
    genotype = json.loads((GENOTYPES / "darts_v2.json").read_text())
    genotype["space"] = "darts5"
    path = tmp_path / "g.json"
    path.write_text(json.dumps(genotype))
    result = CliRunner().invoke(app, ["train", str(path), "--dry-run", "--input", "3x32x32"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the genotype names space 'darts5'" in out and "pass --space FILE" in out and "darts.nas" in out
    chosen = CliRunner().invoke(app, ["train", str(path), "--space", "darts", "--dry-run", "--input", "3x32x32"])
    assert chosen.exit_code == 0 and "3,349,342 parameters" in " ".join(chosen.output.split())



def test_a_pasted_robustdarts_s4_genotype_trains_in_darts_s4():
    """A genotype with RobustDARTS S4's `noise` op, pasted without --space, was checked against the DARTS
    space and refused ("op 'noise' is not a candidate (did you mean 'none'?)"); only darts_s4 has it."""
    s4 = ("Genotype(normal=[('sep_conv_3x3', 0), ('noise', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
          "('noise', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('noise', 3)], normal_concat=range(2, 6), "
          "reduce=[('noise', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 2), ('sep_conv_3x3', 0), "
          "('noise', 1), ('sep_conv_3x3', 2), ('sep_conv_3x3', 0)], reduce_concat=range(2, 6))")
    result = CliRunner().invoke(app, ["train", s4, "--dry-run", "--input", "3x32x32"])
    assert result.exit_code == 0, result.output
    assert "network darts_s4:" in " ".join(result.output.split())

def test_cli_dry_run_names_no_auxiliary_head_a_space_does_not_have_and_warns_when_one_is_dropped():
    nb = CliRunner().invoke(app, ["train", str(GENOTYPES / "nb201_best_cifar10.json"), "--dry-run"])
    assert nb.exit_code == 0, nb.output
    assert "auxiliary" not in nb.output and "1,288,218 parameters (1.29M)," in nb.output
    small = CliRunner().invoke(app, ["train", str(GENOTYPES / "darts_v2.json"), "--set", "C=4", "--set", "layers=5",
                                     "--dry-run"])
    out = " ".join(small.output.split())
    assert small.exit_code == 0, small.output
    assert "with the auxiliary head" not in out
    assert "warning: auxiliary head dropped" in out and "warning: aux_weight 0.4 set to 0" in out
    assert "aux_weight = 0.0" in out


def test_a_training_run_records_its_warnings_and_effective_aux_weight(tmp_path):
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "darts_v2.json"), params={"C": 2, "layers": 3},
                                     overrides={"epochs": 1, "batch": 512}))
    run_train(job, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["aux_weight"] == 0
    assert any(w.startswith("auxiliary head dropped") for w in config["warnings"])
    assert any(w.startswith("aux_weight 0.4 set to 0") for w in config["warnings"])


@pytest.mark.slow
def test_cli_trains_a_published_genotype_for_one_epoch_and_resume_refuses_a_finished_run(tmp_path):
    run = tmp_path / "run"
    args = ["train", str(GENOTYPES / "darts_v2.json"), "--set", "C=4", "--set", "layers=5", "--epochs", "1",
            "--run-dir", str(run)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    again = CliRunner().invoke(app, ["train", "x", "--resume", str(run)])
    assert again.exit_code == 1 and "already finished" in " ".join(again.output.split())


@pytest.mark.parametrize("overrides, message", [
    ({"lr": "abc"}, "setting lr must be a number, got 'abc'"),
    ({"epochs": 1.5}, "setting epochs must be an integer, got 1.5"),
    ({"momentum": True}, "setting momentum must be a number, got True"),
    ({"nesterov": 1}, "setting nesterov must be true or false, got 1"),
    ({"dataset": 3}, "setting dataset must be a string, got 3"),
])
def test_settings_are_type_checked_by_name_in_search_and_training(overrides, message):
    """One mechanism (runtime/config.check_types) for `--opt` in `nasc search` and `nasc train`."""
    from nasc.errors import SearchError
    from nasc.runtime.config import make_config

    with pytest.raises(SearchError, match="^search " + re.escape(message)):
        make_config({}, overrides)
    with pytest.raises(SearchError, match="^training " + re.escape(message)):
        train_config({}, overrides)
    assert make_config({}, {"arch_betas": (0.5, 0.9), "cuda_graphs": None, "lr": 1}).lr == 1  # an int is a number
    with pytest.raises(SearchError, match="arch_betas must be 2 numbers"):
        make_config({}, {"arch_betas": (0.5,)})


def test_a_setting_of_the_wrong_type_is_explained_as_in_a_space_file():
    """`--opt memory=3` gets the meaning that `memory = 3` in a file gets, so the user learns the choices."""
    from nasc.errors import SearchError
    from nasc.runtime.config import make_config

    with pytest.raises(SearchError) as info:
        make_config({}, {"memory": 3})
    assert '"recompute"' in info.value.hint
    with pytest.raises(SearchError) as info:
        train_config({}, {"cutout": "abc"})
    assert info.value.hint == "cutout square side (0: off)"


@pytest.mark.parametrize("overrides, message", [
    ({"schedule": "cosin"}, "unknown learning-rate schedule 'cosin'"),
    ({"lr": float("nan")}, "lr must be a finite number, got nan"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number, got nan"),
    ({"momentum": float("nan")}, "momentum must be a finite number, got nan"),
])
def test_bad_training_values_are_refused_before_the_run_starts(overrides, message, tmp_path):
    """An unknown schedule once passed --dry-run and failed only in the first epoch, after the run directory
    was made; NaN passed every `must be positive` check and trained until the loss became nan."""
    with pytest.raises(SearchError, match=re.escape(message)):
        train_config({}, overrides)
    with pytest.raises(SearchError, match=re.escape(message)):
        from nasc.runtime.config import make_config
        make_config({}, overrides)
    result = CliRunner().invoke(app, ["train", str(GENOTYPES / "darts_v2.json"), "--set", "C=4", "--set", "layers=3",
                                      "--opt", f"{next(iter(overrides))}={next(iter(overrides.values()))}",
                                      "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_cli_train_bad_setting_type_names_the_setting():
    result = CliRunner().invoke(app, ["train", str(GENOTYPES / "darts_v2.json"), "--opt", "lr=abc", "--dry-run"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "training setting lr must be a number, got 'abc'" in out and "'<='" not in out


AUX_SPACE = """space with_aux(C = 8, layers = 5, classes = 10)
import "darts.nas"

network:
    stem conv(3, out = 3 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at [layers // 3, 2 * layers // 3], widen 2 at reduce
    head global_avg_pool > linear(classes)
    aux relu > global_avg_pool > linear(classes) after 2 * layers // 3, weight 0.7
"""


def test_the_networks_aux_weight_is_trained_unless_a_setting_says_otherwise(tmp_path):
    """`aux ... weight W` was ignored: the train setting aux_weight defaults to 0, so the head was never trained."""
    space = tmp_path / "with_aux.nas"
    space.write_text(AUX_SPACE)
    request = dict(genotype=str(GENOTYPES / "darts_v2.json"), space=str(space), params={"C": 2, "layers": 3})
    job = prepare_train(TrainRequest(**request))
    assert job.config.aux_weight == 0.7 and job.net.aux_ids
    job = prepare_train(TrainRequest(**request, overrides={"aux_weight": 0.2}))
    assert job.config.aux_weight == 0.2


def test_step_schedule_decays_by_gamma_every_period_and_reaches_plugins_only_when_set():
    from nasc.runtime.schedules import SCHEDULES, learning_rate

    assert [learning_rate("step", e, 250, 0.1, 0.0) for e in (0, 1, 2)] == [0.1, 0.1 * 0.97, 0.1 * 0.97 ** 2]
    assert [learning_rate("step", e, 10, 1.0, 0.0, gamma=0.5, every=3) for e in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]
    SCHEDULES.add("halving_test", lambda epoch, epochs, lr, lr_min, *, exponent, warmup: lr / 2 ** epoch,
                  doc="test", origin=__name__)
    try:  # a schedule written before `step` existed knows nothing of gamma and every
        assert learning_rate("halving_test", 2, 10, 1.0, 0.0) == 0.25
    finally:
        SCHEDULES._entries.pop("halving_test", None)


def test_step_schedule_settings_are_read_and_checked():
    cfg = train_config({"lr_schedule": CallValue(name="step", args=(), kwargs=(("gamma", 0.5), ("every", 2)))}, {})
    assert (cfg.schedule, cfg.schedule_gamma, cfg.schedule_every) == ("step", 0.5, 2)
    with pytest.raises(SearchError, match="every at least 1"):
        train_config({"lr_schedule": CallValue(name="step", args=(), kwargs=(("every", 0),))}, {})


def test_linear_schedule_is_pcdarts_imagenet_decay_with_its_gentler_last_five_epochs():
    """PC-DARTS train_imagenet.py (its default --lr_scheduler linear, with the paper's lr 0.5, 250 epochs and 5
    warm-up epochs at batch 1024): lr (245 - e) / 245 while 250 - e > 5, then lr (250 - e) / (245 * 5); nasc had
    only cosine, cosine_power, constant and step, so its ImageNet protocol could not be written."""
    from nasc.runtime.schedules import learning_rate

    cfg = train_config({"lr_schedule": CallValue(name="linear", args=(), kwargs=(("warmup", 5),))}, {"lr": 0.5})
    rates = [learning_rate(cfg.schedule, e, 250, cfg.lr, cfg.lr_min, warmup=cfg.warmup) for e in range(250)]
    assert rates[:5] == pytest.approx([0.5 * (245 - e) / 245 * (e + 1) / 5 for e in range(5)])
    assert rates[5] == pytest.approx(0.5 * 240 / 245) and rates[244] == pytest.approx(0.5 / 245)
    assert rates[245:] == pytest.approx([0.5 * (250 - e) / (245 * 5) for e in range(245, 250)])
    # a short run has no 5-epoch tail to slow down: plain linear decay, never 0 or negative
    assert [learning_rate("linear", e, 4, 1.0, 0.0) for e in range(4)] == pytest.approx([1, 0.75, 0.5, 0.25])
    with pytest.raises(SearchError, match="takes no min"):
        train_config({"lr_schedule": CallValue(name="linear", args=(), kwargs=(("min", 0.1),))}, {})


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant", "linear"])
def test_warmup_is_pcdarts_linear_warmup_for_every_builtin_schedule(schedule):
    """PC-DARTS train_imagenet.py: epoch e < 5 runs at the schedule's rate for e (its `current_lr`) times
    (e + 1) / 5, then at the schedule's own rate. `warmup` was read by cosine_power only:
    `lr_schedule = cosine(warmup = 5)` or `--opt warmup=5` trained without one."""
    from nasc.runtime.schedules import learning_rate

    cfg = train_config({"lr_schedule": CallValue(name=schedule, args=(), kwargs=(("warmup", 5),))}, {"lr": 0.5})
    rates = [learning_rate(cfg.schedule, e, 250, cfg.lr, cfg.lr_min, warmup=cfg.warmup) for e in range(7)]
    own = [learning_rate(schedule, e, 250, 0.5, 0.0) for e in range(7)]
    assert rates[:5] == pytest.approx([own[e] * (e + 1) / 5 for e in range(5)], rel=1e-12)
    assert rates[5:] == own[5:]  # not shifted by the warm-up


def test_warmup_scales_the_schedules_rate_not_lr():
    """train_imagenet.py sets lr = current_lr · (e + 1) / 5, current_lr being the schedule's rate for epoch e:
    a step schedule halving every epoch runs epoch 2 of a 3-epoch warm-up at lr / 4, not at lr."""
    from nasc.runtime.schedules import learning_rate

    rates = [learning_rate("step", e, 10, 1.0, 0.0, warmup=3, gamma=0.5) for e in range(4)]
    assert rates == pytest.approx([1 / 3, 0.5 * 2 / 3, 0.25, 0.125])


def _register_digits3() -> None:
    import attrs

    from nasc.runtime.data import DATASETS, ImageSet, load_dataset

    if "digits3" not in DATASETS:
        @DATASETS.register("digits3")
        def _digits3(data_dir, download):  # 3 classes of the digits: a dataset that is not the default
            d = load_dataset("digits")
            keep = [s for s in (d.train, d.test)]
            sets = [ImageSet(images=s.images[s.labels < 3], labels=s.labels[s.labels < 3]) for s in keep]
            return attrs.evolve(d, name="digits3", train=sets[0], test=sets[1], classes=3)


def test_a_search_run_is_trained_on_the_data_it_was_searched_on_unless_told_otherwise(tmp_path):
    _register_digits3()
    run = tmp_path / "search"
    run.mkdir()
    (run / "genotype.json").write_text((GENOTYPES / "darts_v2.json").read_text())
    (run / "config.json").write_text(json.dumps({"space": "darts", "search": {"dataset": "digits3", "data_dir": None}}))
    job = prepare_train(TrainRequest(genotype=str(run), params=TINY))
    assert job.dataset.name == "digits3" and job.config.dataset == "digits3"
    assert job.ir.params["classes"] == 3
    job = prepare_train(TrainRequest(genotype=str(run), params=TINY, overrides={"dataset": "digits"}))
    assert job.dataset.name == "digits" and job.ir.params["classes"] == 10


def test_training_of_a_search_run_on_other_data_resumes_on_that_data(tmp_path):
    """`nasc train SEARCH_RUN` trains on the search's dataset, but a resume re-read only the run's genotype.json,
    which does not name it: the resume built the digits network and stopped with "checkpoint belongs to another
    space ... the space file changed", so such a run (CIFAR-10 searched, then trained) could never be resumed."""
    _register_digits3()
    search = tmp_path / "search"
    search.mkdir()
    (search / "genotype.json").write_text((GENOTYPES / "darts_v2.json").read_text())
    (search / "config.json").write_text(json.dumps({"space": "darts", "search": {"dataset": "digits3", "data_dir": None}}))
    request = TrainRequest(genotype=str(search), params={"C": 4, "layers": 3}, overrides={"epochs": 2, "batch": 128})
    run_train(prepare_train(request), tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run_train(prepare_train(request), tmp_path / "resumed", stop_after=1)
    resume_train(tmp_path / "resumed")
    for name in ("metrics.jsonl", "result.json"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name


def test_training_a_search_run_whose_space_file_changed_since_warns(tmp_path, spaces_dir):
    """`nasc train RUN` compiles the run's space file as it is now: an op edited since (same name, another body)
    would train a network the search never scored; the fingerprint the run recorded tells."""
    from nasc.runtime.search import Request, prepare, run_search

    space = tmp_path / "mine.nas"
    text = (spaces_dir / "nb201.nas").read_text()
    space.write_text(text)
    nb201 = {"C": 4, "N": 1}
    run_search(prepare(Request(space=str(space), params=nb201, overrides={"epochs": 1, "device": "cpu",
                                                                          "train_portion": 0.1})), tmp_path / "run")
    unchanged = prepare_train(TrainRequest(genotype=str(tmp_path / "run"), params=nb201))
    assert not any("changed since the search" in w for w in unchanged.ir.meta["warnings"])
    assert "avg_pool(3, stride)" in text
    space.write_text(text.replace("avg_pool(3, stride)", "max_pool(3, stride)"))
    changed = prepare_train(TrainRequest(genotype=str(tmp_path / "run"), params=nb201))
    [warning] = [w for w in changed.ir.meta["warnings"] if "changed since the search" in w]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["fingerprint"]
    assert str(space.resolve()) in warning and recorded in warning


def test_training_a_search_run_made_with_opt_affine_does_not_say_its_space_file_changed(tmp_path, spaces_dir):
    """`--opt affine=true` is compiled into the searched IR (and its fingerprint): compiling the unchanged file
    without it to compare warned that the space file had changed since the search."""
    from nasc.runtime.search import Request, prepare, run_search

    nb201 = {"C": 4, "N": 1}
    run_search(prepare(Request(space=str(spaces_dir / "nb201.nas"), params=nb201, overrides={
        "epochs": 1, "device": "cpu", "train_portion": 0.1, "affine": True})), tmp_path / "run")
    job = prepare_train(TrainRequest(genotype=str(tmp_path / "run"), params=nb201))
    assert not any("changed since the search" in w for w in job.ir.meta["warnings"])


def test_another_dataset_than_the_searched_one_is_not_looked_for_in_the_searched_data_dir(tmp_path):
    """A run searched on CIFAR-10 in DIR, trained with `--data digits3`: DIR was CIFAR-10's folder, not its."""
    from nasc.runtime.train import searched_data

    run = {"search": {"dataset": "cifar10", "data_dir": str(tmp_path / "c10")}}
    assert searched_data(run, {}) == {"dataset": "cifar10", "data_dir": str(tmp_path / "c10")}
    assert searched_data(run, {"dataset": "cifar10"})["data_dir"] == str(tmp_path / "c10")
    assert searched_data(run, {"dataset": "mnist"}) == {}
    assert train_config({}, {**searched_data(run, {"dataset": "mnist"}), "dataset": "mnist"}).data_dir is None


def test_a_data_dir_from_nasc_data_is_recorded_so_train_and_resume_read_the_same_folder(tmp_path, monkeypatch):
    """config.json recorded data_dir None for data read from $NASC_DATA; `nasc train RUN` in a shell
    without it then looked in ~/.cache/nasc/data."""
    from nasc.runtime.search import Request, prepare

    monkeypatch.setenv("NASC_DATA", str(tmp_path / "shared"))
    search = prepare(Request(space="nb201", params={"C": 4, "N": 1}, overrides={"epochs": 1}))
    assert search.config.data_dir == str(tmp_path / "shared")
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1}))
    assert job.config.data_dir == str(tmp_path / "shared")
    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "nb201_best_cifar10.json"), params={"C": 4, "N": 1},
                                     overrides={"data_dir": str(tmp_path / "mine")}))
    assert job.config.data_dir == str(tmp_path / "mine")  # --data-dir still wins
    monkeypatch.delenv("NASC_DATA")
    assert prepare(Request(space="nb201", params={"C": 4, "N": 1})).config.data_dir is None


def test_data_dirs_are_recorded_absolute_so_other_folders_find_the_data(tmp_path, monkeypatch):
    """`--data-dir data` typed in one folder must still mean that folder to `nasc train RUN` run elsewhere."""
    from nasc.runtime.config import SearchConfig

    monkeypatch.chdir(tmp_path)
    assert SearchConfig(data_dir="data").data_dir == str(tmp_path.resolve() / "data")
    assert train_config({}, {"data_dir": "~/d"}).data_dir == str(Path("~/d").expanduser().resolve())
    assert SearchConfig().data_dir is None and train_config({}, {}).data_dir is None
