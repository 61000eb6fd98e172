"""Training: a few-step run writes what it promises and reloads; the loss falls on
a fixed batch; a run killed with SIGKILL resumes to the same weights as one that
was never interrupted."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gagavatar.data.pairs import PairDataset, collate
from gagavatar.head import load_head_model
from gagavatar.synthetic.video import SynthConfig, generate
from gagavatar.train.losses import GAGAvatarLoss, LossConfig
from gagavatar.train.sampler import batch_indices
from gagavatar.train.state import checkpoints
from gagavatar.train.trainer import TrainConfig, build_model, make_optimizer, train

SMALL_MODEL = {"image_size": 56, "plane_size": 16, "render_size": 64}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(identities=5, videos_per_identity=1, frames=4, size=64, seed=3, workers=1,
                                  n_gaussians=3000))
    return root


def config(dataset, out, **kw):
    return TrainConfig(**{"data": str(dataset), "out": str(out), "model": SMALL_MODEL, "batch_size": 2, "max_steps": 4,
                          "checkpoint_every": 2, "sample_every": 2, "log_every": 1, **kw})


def test_sampler_is_a_function_of_step_and_rank():
    a = [batch_indices(s, 10, 3, seed=1) for s in range(7)]
    assert a == [batch_indices(s, 10, 3, seed=1) for s in range(7)]
    epoch0 = sum(a[:3], []) + a[3][:1]
    assert sorted(epoch0) == list(range(10))  # each index once per epoch
    r0, r1 = batch_indices(2, 100, 4, rank=0, world_size=2), batch_indices(2, 100, 4, rank=1, world_size=2)
    assert not set(r0) & set(r1)


def test_few_step_run_writes_and_reloads(dataset, tmp_path):
    from gagavatar import load

    run = train(config(dataset, tmp_path / "run"))
    for name in ("config.json", "metrics.jsonl", "loss.png", "model.safetensors", "samples/step_000004.png"):
        assert (run / name).is_file(), name
    assert [p.name for p in checkpoints(run)][-1] == "step_000004.pt"
    model = load(run / "model.safetensors")
    assert model.config.render_size == 64
    state = torch.load(checkpoints(run)[-1], weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state["model"][k])


def test_a_time_budget_counts_the_time_before_a_resume(dataset, tmp_path):
    """--max-minutes is training time in all: a run that spent its budget, run again with
    --resume, trains no further (it used to train for the whole budget once more)."""
    cfg = config(dataset, tmp_path / "run", max_steps=10_000, max_minutes=0.01, checkpoint_every=1, sample_every=1000)
    run = train(cfg)
    spent = checkpoints(run)[-1]
    assert 0 < int(spent.stem[5:]) < 10_000 and torch.load(spent, weights_only=True)["extra"]["seconds"] > 0.6
    train(cfg, resume=True)
    assert checkpoints(run)[-1] == spent and (run / "model.safetensors").is_file()


def test_loss_decreases_on_a_fixed_batch(dataset):
    cfg = config(dataset, "unused", lr=1e-3)
    torch.manual_seed(0)
    head = load_head_model(None)
    model = build_model(cfg, head)
    data = PairDataset(dataset, size=64, length=8)
    batch = collate([data[0], data[1]])
    vertices = batch["target"].vertices(head)
    optimizer, _ = make_optimizer(model, cfg)
    loss_fn = GAGAvatarLoss(LossConfig())
    losses = []
    for _ in range(15):
        out = model(batch["source_image"], batch["source"].camera, vertices, batch["target"].camera)
        loss, _ = loss_fn(out.coarse, out.fine, batch["target_image"], batch["target_bbox"], out.vertices,
                          out.lifted_points)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def _cli(dataset, out, *extra):
    code = ("import sys; from gagavatar.train.trainer import TrainConfig, train; "
            f"train(TrainConfig(data={str(dataset)!r}, out={str(out)!r}, model={SMALL_MODEL!r}, batch_size=2, "
            "max_steps=6, checkpoint_every=2, sample_every=100, log_every=1), resume='--resume' in sys.argv)")
    return [sys.executable, "-c", code, *extra]


def test_sigkill_then_resume_matches_an_uninterrupted_run(dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(dataset, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "step_000002.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "step_000002.pt").exists() and not (killed / "model.safetensors").exists()
    subprocess.run(_cli(dataset, killed, "--resume"), env=env, check=True, capture_output=True)
    straight = tmp_path / "straight"
    subprocess.run(_cli(dataset, straight), env=env, check=True, capture_output=True)
    a = torch.load(checkpoints(killed)[-1], weights_only=True)
    b = torch.load(checkpoints(straight)[-1], weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)


def _train_cli(dataset, out, batch_size: int, processes: int = 1) -> list[str]:
    launcher = [sys.executable, "-m", "gagavatar"] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", "-m", "gagavatar"]
    model = [a for k, v in SMALL_MODEL.items() for a in ("--model", f"{k}={v}")]
    return [*launcher, "train", "--data", str(dataset), "--out", str(out), *model, "--batch-size", str(batch_size),
            "--max-steps", "3", "--lr", "1e-3", "--checkpoint-every", "3", "--sample-every", "100"]


def test_two_ddp_processes_train_like_one_process_with_their_batches(dataset, tmp_path):
    """torchrun, 2 CPU processes (gloo) x batch 1 == 1 process x batch 2: each rank takes its
    half of every global batch, gradients are averaged, only rank 0 writes."""
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, batch, processes in (("ddp", 1, 2), ("one", 2, 1), ("half", 1, 1)):
        done = subprocess.run(_train_cli(dataset, tmp_path / name, batch, processes), env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    logged = [json.loads(line)["step"] for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [3]  # rank 0 alone logs (the last step; --log-every is 10)
    torch.manual_seed(0)
    initial = build_model(config(dataset, "unused"), load_head_model(None)).state_dict()
    ddp, one, half = (load_file(tmp_path / name / "model.safetensors") for name in ("ddp", "one", "half"))

    def disagreement(run: dict) -> float:
        """Fraction of the weights that ``one`` moved where ``run`` ends more than lr / 10 away.

        Adam's first steps are close to lr * sign(gradient), so a gradient that is zero up to
        rounding (the ranks sum in another order) can move a weight either way: a few
        scattered weights may differ, never most of them.
        """
        moved = apart = 0
        for k in one:
            changed = one[k] != initial[k]
            moved += int(changed.sum())
            apart += int(((run[k] - one[k]).abs() > 1e-4)[changed].sum())
        return apart / moved

    assert disagreement(ddp) < 1e-3
    assert disagreement(half) > 0.3  # one rank's half of the data alone trains differently


def test_cli_errors_name_the_problem(dataset, tmp_path):
    from typer.testing import CliRunner

    from gagavatar.cli import app

    runner = CliRunner()
    for args, message in (([f"--data={tmp_path / 'nowhere'}"], "does not exist"),
                          ([f"--data={dataset}", "--model", "plane_sise=32"], "plane_sise"),
                          ([f"--data={dataset}", "--model", "plane_size"], "KEY=VALUE")):
        result = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--max-steps", "1", *args])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_init_starts_from_the_checkpoint_not_from_random_weights(dataset, tmp_path):
    """The first step's loss (logged before its update) is the checkpoint's own loss on that batch."""
    import json

    from gagavatar.model import load

    first = train(config(dataset, tmp_path / "first", max_steps=2))  # a checkpoint with trained weights
    run = train(TrainConfig(data=str(dataset), out=str(tmp_path / "init"), init=str(first), batch_size=2,
                            max_steps=1, checkpoint_every=1, sample_every=100, log_every=1))
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert json.loads((run / "config.json").read_text())["init"] == str(first)  # what it started from

    model = load(first)
    data = PairDataset(dataset, size=model.config.render_size, length=2)  # as the run's: 1 step x batch 2
    batch = collate([data[i] for i in batch_indices(0, len(data), 2, seed=0)])
    with torch.no_grad():
        out = model(batch["source_image"], batch["source"].camera, batch["target"].vertices(load_head_model(None)),
                    batch["target"].camera)
        loss, _ = GAGAvatarLoss(LossConfig())(out.coarse, out.fine, batch["target_image"], batch["target_bbox"],
                                               out.vertices, out.lifted_points)
    assert logged["step"] == 1 and logged["loss"] == pytest.approx(loss.item(), rel=1e-5)
    fresh = train(config(dataset, tmp_path / "fresh", max_steps=1))  # a new network's first loss differs
    assert json.loads((fresh / "metrics.jsonl").read_text().splitlines()[0])["loss"] != pytest.approx(loss.item(),
                                                                                                  rel=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--preset", "paper"], "holds a 'tiny' model, not --preset paper"),
    (["--head-model", "{flame}"], "was trained with the head model synthetic-flame-v1, not synthetic-seed3"),
    (["--model", "plane_size=8"], "--init takes the network from its checkpoint"),
])
def test_init_with_the_wrong_preset_or_head_model_is_one_line(dataset, tmp_path, args, message):
    from typer.testing import CliRunner

    from gagavatar.cli import app
    from gagavatar.head import HeadModel
    from gagavatar.tools.build_head import synthetic_head_model

    first = train(config(dataset, tmp_path / "first", max_steps=1))
    other_head = tmp_path / "other_head.npz"
    synthetic_head_model(seed=3, n_vertices=1500, n_shape=30, n_expression=25).save(other_head)
    assert HeadModel.load(other_head).n_vertices == 1500
    result = CliRunner().invoke(app, ["train", "--data", str(dataset), "--out", str(tmp_path / "run"), "--init",
                                      str(first), "--max-steps", "1"] + [a.format(flame=other_head) for a in args])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
