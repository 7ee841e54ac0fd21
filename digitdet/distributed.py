"""Distributed plumbing for ``torchrun``: process group, rank helpers, DDP wrapping, gathers.

Rank and world size come from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, plus ``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous). Without them, or
before :func:`init`, every helper here is the single-process identity: ``rank() == 0``,
``world_size() == 1``, gathers return their input, ``on_main(fn)`` just calls ``fn``. So
library code calls these helpers unconditionally and a plain ``python -m digitdet`` run is
unchanged.

Conventions the rest of digitdet relies on:

* Files (checkpoints, metrics, TensorBoard, pictures, pred.json/pred.csv) are written by
  rank 0 only (:func:`main_only`, :func:`is_main`); other ranks log warnings and errors only.
* Decisions every rank must take alike (resume state, best checkpoint, time
  budget) are made on rank 0 and broadcast (:func:`on_main`, :func:`broadcast_object`), so
  ranks never disagree and then hang in a collective.
* Inference is sharded by *batch* (:func:`shard_batches`): batches are built over the whole
  image list exactly as in one process, then rank r runs batches r, r+world, ... Each image is
  therefore padded and batched with the same neighbours as in a single-process run (torchvision
  pads a batch to its largest image, which changes activations near the borders), and the
  merged result is identical to the single-process one, not just close.

Backend: NCCL for CUDA devices, gloo for CPU, chosen from the device. PyTorch's own engine
(``torch.distributed`` + ``DistributedDataParallel``) does the work; nothing here is home-made.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os

import torch
import torch.distributed as dist
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

log = logging.getLogger("digitdet")


# ---- process group --------------------------------------------------------------------------

def launched_by_torchrun() -> bool:
    """True when the environment describes a multi-process job (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device | str) -> torch.device:
    """Join the job torchrun started, if any; returns this process's device.

    Single process (no ``WORLD_SIZE`` > 1 in the environment): returns ``device`` unchanged and
    starts nothing. Otherwise initialises the default process group from torchrun's variables
    with NCCL when ``device`` is CUDA (then pins this process to ``cuda:LOCAL_RANK``) or gloo
    when it is CPU (then, if torch uses all cores, gives each of the node's LOCAL_WORLD_SIZE
    processes its share), silences INFO logging on ranks > 0, and registers :func:`teardown`
    at exit.
    Calling it again when the group exists returns the device without re-initialising.
    """
    device = torch.device(device)
    if not launched_by_torchrun():
        return device
    local_rank, world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        # One GPU per process: the index comes from torchrun, not from --device.
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    elif torch.get_num_threads() >= (os.cpu_count() or 1):
        # Every process of the node using all cores (the CLI's default) oversubscribes them many
        # times over; give each its share. An explicit smaller --threads is kept.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not is_distributed():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(teardown)
    if not is_main():
        logging.getLogger("digitdet").setLevel(logging.WARNING)
    log.info("distributed: %d processes (%s backend), rank 0 on %s", world_size(), dist.get_backend(), device)
    return device


def teardown() -> None:
    """Destroy the default process group if one exists (safe to call more than once)."""
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files and logs."""
    return rank() == 0


def main_only(fn):
    """Decorator: run ``fn`` on rank 0 only; on other ranks it does nothing and returns None."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_main() else None
    return wrapper


# ---- small objects ----------------------------------------------------------------------------

def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` has it, on every rank (any picklable object)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` computed on rank 0 only and returned on every rank.

    An exception raised by ``fn`` on rank 0 is raised on every rank, so a bad input stops the
    whole job with one clear message instead of leaving the other ranks waiting.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    result, error = None, None
    if is_main():
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    result, error = broadcast_object((result, error))
    if error is not None:
        raise error
    return result


def gather_predictions(out: dict) -> dict:
    """Merge every rank's ``predict_batches``-style output into the whole job's, on every rank.

    ``out["detections"]`` and ``out["errors"]`` (dicts keyed by image id, each rank holding its
    shard) become their union ordered by image id; ``out["images_per_s"]`` becomes the sum over
    ranks (they run at the same time). Other keys (e.g. ``image_ids``) are kept as this rank has
    them. Single process: ``out`` itself.
    """
    if not is_distributed():
        return out
    mine = {k: out[k] for k in ("detections", "errors", "images_per_s") if k in out}
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, mine)
    merged = dict(out)
    for key in ("detections", "errors"):
        if key in mine:
            merged[key] = dict(sorted((kv for p in parts for kv in p[key].items()), key=lambda kv: kv[0]))
    if "images_per_s" in mine:
        merged["images_per_s"] = sum(p["images_per_s"] for p in parts)
    return merged


# ---- data and model -------------------------------------------------------------------------

def shard_batches(loader: DataLoader) -> DataLoader:
    """The share of an inference loader's batches this rank runs: batches rank, rank + world, ...

    ``loader`` must iterate a fixed list of batches (a ``batch_sampler`` list as built by
    :func:`digitdet.data.loaders.inference_loader`, or a plain unshuffled ``batch_size``
    loader). Batches are kept whole, so every image meets the same padding as in one process
    (see module docstring). Single process: ``loader`` itself. A rank may get no batch at all
    when there are fewer batches than ranks; gathers still work.
    """
    if not is_distributed() or world_size() == 1:
        return loader
    batches = [list(b) for b in loader.batch_sampler][rank()::world_size()]
    return DataLoader(loader.dataset, batch_sampler=batches, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)


def wrap_model(model: torch.nn.Module, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """``model`` (already on ``device``) wrapped in DistributedDataParallel; unchanged in one process.

    ``sync_bn`` converts BatchNorm layers to SyncBatchNorm (statistics over the global batch:
    worth it when each GPU holds few images). torch runs SyncBatchNorm on GPUs only, so it is
    refused on CPU with the fix in the message. DDP broadcasts rank 0's weights on construction,
    so every rank starts from the same model.
    """
    if not is_distributed() or world_size() == 1:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise ValueError("sync_bn=true needs CUDA GPUs (torch's SyncBatchNorm does not run on CPU); "
                             "use sync_bn=false")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


def group_norm_layer(own: dict, state: dict) -> str | None:
    """The first BatchNorm layer of a model (its state dict ``own``) that ``state`` holds as
    GroupNorm: a weight without the running statistics BatchNorm keeps. digitdet before 0.2
    could build backbones with GroupNorm (``norm: gn``); their weights must not be loaded into
    today's BatchNorm, whose running mean 0 and variance 1 would stay in place of statistics
    the weights were never trained with. None when every such layer fits."""
    for key in own:
        if key.endswith(".running_mean"):
            layer = key[: -len(".running_mean")]
            if f"{layer}.weight" in state and key not in state:
                return layer
    return None


def group_norm_error(source: str, evidence: str) -> ValueError:
    """The one-line error for weights whose normalisation layers were GroupNorm (group_norm_layer);
    ``evidence`` says how it shows."""
    return ValueError(f"{source}: its backbone was trained with GroupNorm (norm=gn, a digitdet before 0.2: "
                      f"{evidence}), but digitdet's backbones now use BatchNorm, so its weights do not fit; "
                      "retrain it with this version, or read it with the version that made it")


def load_model_state(model: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Load a checkpoint's weights into ``model``, plain or DDP-wrapped, saved either way.

    digitdet saves weights without DDP's ``module.`` prefix (train.model_state); a state dict
    saved by other code straight from a DDP model has it, and it is removed here (on a copy).
    Weights that do not fit the model (its config names another architecture, they were
    edited, or its backbone was GroupNorm's, digitdet before 0.2) are a ValueError naming
    ``source`` and the first mismatch, not torch's list of keys.
    """
    state_dict = dict(state_dict)
    consume_prefix_in_state_dict_if_present(state_dict, "module.")
    own = unwrap(model).state_dict()
    layer = group_norm_layer(own, state_dict)
    if layer is not None:  # strict loading refuses it too, but by a missing running_mean: say what it is
        raise group_norm_error(source, f"{layer} has a weight but no running_mean/running_var")
    try:
        unwrap(model).load_state_dict(state_dict)
    except RuntimeError:
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        shape = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
        first = (f"{len(missing)} weights missing (first: {missing[0]})" if missing else
                 f"{len(unexpected)} weights it does not have (first: {unexpected[0]})" if unexpected else
                 f"{len(shape)} of another shape (first: {shape[0]}: {tuple(state_dict[shape[0]].shape)} "
                 f"for {tuple(own[shape[0]].shape)})" if shape else "they do not load")
        raise ValueError(f"{source}: its weights do not fit the model its config describes: {first}; "
                         "was the config edited, or saved by another program?") from None


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP syncs buffers at the start of each training forward, after which each rank updates its
    running statistics from its own batch; at the end of an epoch the ranks' BatchNorm
    statistics therefore differ slightly. Evaluating (each rank a shard) and checkpointing
    (rank 0) must use one model: rank 0's, which is the one saved.
    """
    if not is_distributed():
        return
    for buf in unwrap(model).buffers():
        dist.broadcast(buf, src=0)
