"""torchrun / DDP on CPU: 2 processes with gloo, compared with one process on the same data.

One ``torch.multiprocessing.spawn`` of 2 ranks, with the environment torchrun would give them,
does everything (CLI train and predict, resume of a single-process run, sharded evaluation,
loading into a DDP model): process start-up and imports dominate, so all share one start.
"""
import os
import pickle
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from test_train import TINY

import digitdet.train.fit as train_mod
from digitdet import distributed
from digitdet.cli import main
from digitdet.config import Config
from digitdet.data.loaders import inference_loader
from digitdet.io import load_checkpoint, read_pred_json
from digitdet.models.faster_rcnn import build_model
from digitdet.read.detector import load_detector
from digitdet.score.evaluation import evaluate
from digitdet.train.fit import fit, load_split

pytestmark = pytest.mark.slow  # two torchrun-like processes: ~15 s

WORLD = 2
DDP_CFG = [*TINY, "batch_size=2", "epochs=1", "save_every_steps=0"]  # 12 images: 3 steps per rank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_valid(weights, device, batch_size: int = 1):
    """(metrics, detections) of ``weights`` on the whole valid split, sharded under torchrun."""
    model, cfg, _ = load_detector(weights, device)
    ds, gt = load_split(os.environ["DIGITDET_TEST_DATA"], "valid", cfg, False)
    loader = distributed.shard_batches(inference_loader(ds, ds.aspect_ratios(), batch_size, 0))
    return evaluate(model, loader, device, gt, cfg, progress=False)


def _predict_args(weights, images) -> list[str]:
    return ["--weights", str(weights), "--images", str(images), "--quiet", "--workers", "0", "--threads", "1",
            "--batch-size", "2", "--device", "cpu"]  # 6 test images: 3 batches, 2 on rank 0 and 1 on rank 1


def _worker(rank: int, port: int, data: str, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DIGITDET_TEST_DATA=data)
    torch.set_num_threads(1)
    device = distributed.init("cpu")

    # 1. Train under DDP through the CLI, keeping each rank's parameters after the epoch.
    params, end_of_epoch = {}, train_mod.end_of_epoch

    def spy(run, *args, **kwargs):
        params.update({n: p.detach().clone() for n, p in distributed.unwrap(run.model).named_parameters()})
        return end_of_epoch(run, *args, **kwargs)

    train_mod.end_of_epoch = spy
    assert main(["train", "--data", data, "--out", f"{tmp}/ddp", "--quiet", "--device", "cpu", *DDP_CFG]) == 0
    train_mod.end_of_epoch = end_of_epoch
    torch.save(params, f"{tmp}/params{rank}.pt")

    # 2. Resume, with 2 processes, the single-process run the test stopped mid-epoch.
    fit(Config(), data, f"{tmp}/single", resume=True, progress=False)

    # 3. Sharded evaluation of the 2-process checkpoint (every rank gets the same answer).
    metrics, dets = _eval_valid(f"{tmp}/ddp/last.pt", device)
    with open(f"{tmp}/eval{rank}.pkl", "wb") as f:
        pickle.dump({"metrics": metrics, "dets": dets}, f)

    # 4. Sharded prediction through the CLI; rank 0 writes the merged files.
    assert main(["predict", *_predict_args(f"{tmp}/ddp/best.pt", f"{data}/test"), "--out", f"{tmp}/pred"]) == 0

    # 5. A checkpoint loads into a DDP-wrapped model, with or without DDP's "module." prefix.
    ckpt = load_checkpoint(f"{tmp}/ddp/last.pt")
    state = ckpt["model"]
    ddp = distributed.wrap_model(build_model(Config.from_dict(ckpt["config"], saved=True)), device)
    for sd in (state, {f"module.{k}": v for k, v in state.items()}):
        distributed.load_model_state(ddp, sd)
        assert all(torch.equal(v, ddp.state_dict()[f"module.{k}"]) for k, v in state.items())
    distributed.teardown()


@pytest.fixture(scope="module")
def ddp_run(tiny_data, tmp_path_factory):
    """Run the 2-process job once; returns its folder."""
    tmp = tmp_path_factory.mktemp("ddp")
    # A single-process run killed mid-epoch (4 of 6 steps), for rank-0-less resume under DDP.
    fit(Config().override([*DDP_CFG, "epochs=2"]), tiny_data, tmp / "single", progress=False, stop_after_steps=4)
    with pytest.MonkeyPatch.context() as mp_env:
        mp_env.setenv("OMP_NUM_THREADS", "1")  # inherited by the workers: 2 processes on 2 cores
        mp.spawn(_worker, args=(_free_port(), str(tiny_data), str(tmp)), nprocs=WORLD, join=True)
    return tmp


def test_parameters_are_identical_across_ranks(ddp_run):
    p0, p1 = (torch.load(ddp_run / f"params{r}.pt") for r in range(WORLD))
    assert p0 and p0.keys() == p1.keys()
    for name in p0:
        assert torch.equal(p0[name], p1[name]), name
    saved = load_checkpoint(ddp_run / "ddp" / "last.pt")["model"]  # rank 0's, after the same epoch
    assert all(torch.equal(saved[n], p0[n]) for n in p0)


def test_distributed_evaluation_equals_single_process(ddp_run, tiny_data, monkeypatch):
    monkeypatch.setenv("DIGITDET_TEST_DATA", str(tiny_data))
    torch.set_num_threads(1)  # as the workers: same kernels, same sums
    metrics, dets = _eval_valid(ddp_run / "ddp" / "last.pt", torch.device("cpu"))
    for r in range(WORLD):
        with open(ddp_run / f"eval{r}.pkl", "rb") as f:
            got = pickle.load(f)
        assert sorted(got["dets"]) == sorted(dets) == list(range(1, 9))
        for image_id, (boxes, labels, scores) in dets.items():
            b, lab, s = got["dets"][image_id]
            assert np.array_equal(lab, labels) and np.allclose(b, boxes, atol=1e-4) and np.allclose(s, scores, atol=1e-5)
        for key in ("map", "ap50", "ap75", "accuracy"):
            assert got["metrics"][key] == pytest.approx(metrics[key], abs=1e-6), key


def test_two_process_checkpoints_load_in_one_process(ddp_run):
    for name in ("last.pt", "best.pt"):
        model, cfg, _ = load_detector(ddp_run / "ddp" / name, torch.device("cpu"))
        assert cfg.batch_size == 2 and not any(k.startswith("module.") for k in model.state_dict())
    last = load_checkpoint(ddp_run / "ddp" / "last.pt")
    assert last["progress"]["world_size"] == WORLD and last["progress"]["epoch"] == 1
    assert (ddp_run / "ddp" / "metrics.csv").read_text().count("\n") == 2  # header + 1 epoch, written once


def test_single_process_run_resumes_under_ddp(ddp_run):
    progress = load_checkpoint(ddp_run / "single" / "last.pt")["progress"]
    assert progress["epoch"] == 2 and progress["world_size"] == WORLD and len(progress["history"]) == 2
    # 4 single-process steps = 8 samples = batch 2 of 3 per rank; then 1 + 3 more steps.
    assert load_checkpoint(ddp_run / "single" / "last.pt")["scheduler"]["last_epoch"] == 2 + 1 + 3


def test_sharded_predict_equals_single_process(ddp_run, tiny_data, tmp_path):
    torch.set_num_threads(1)
    assert main(["predict", *_predict_args(ddp_run / "ddp" / "best.pt", tiny_data / "test"), "--out", str(tmp_path)]) == 0
    assert (ddp_run / "pred" / "pred.csv").read_bytes() == (tmp_path / "pred.csv").read_bytes()
    a, b = read_pred_json(ddp_run / "pred" / "pred.json"), read_pred_json(tmp_path / "pred.json")
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert (x["image_id"], x["category_id"]) == (y["image_id"], y["category_id"])
        assert x["score"] == pytest.approx(y["score"], abs=1e-4) and np.allclose(x["bbox"], y["bbox"], atol=0.02)
