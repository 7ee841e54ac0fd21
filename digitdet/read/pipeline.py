"""A folder of photos through the reader: listed once, batched by shape, read as ``cfg`` says.

:func:`folder_loader` lists the folder and reads the photos' sizes from their headers;
:func:`predict_folder` runs the detector (wrapped in zoom-in reading) over it. The numbers are
read by :func:`digitdet.read.decode.decode_all` and written by :mod:`digitdet.read.submission`.
"""
from __future__ import annotations

from digitdet.config import Config
from digitdet.data.coco import ImageFolderDataset
from digitdet.data.images import readable_sizes
from digitdet.data.loaders import inference_loader
from digitdet.data.transforms import build_transforms
from digitdet.distributed import shard_batches
from digitdet.read.detect import predict_batches
from digitdet.read.stream import folder_output
from digitdet.read.zoom import reading_detector


# Folders of fewer photos are read without DataLoader worker processes.
FEW_PHOTOS = 64


def folder_loader(images_dir, cfg: Config, batch_size: int, workers: int):
    """(ImageFolderDataset, loader batching images of similar shape, at most
    ``loaders.MAX_BATCH_PIXELS`` pixels a batch: a folder of phone photos reads one at a time,
    ``{image_id: (width, height)}`` of its readable images, upright, from the file headers).

    Under torchrun (an initialised process group) the loader holds only this rank's share of
    the batches (distributed.shard_batches) while the dataset lists every image; merge the
    ranks' predictions with distributed.gather_predictions. Single process: every batch.
    """
    ds = ImageFolderDataset(images_dir, build_transforms("none", train=False))
    if len(ds.items) < FEW_PHOTOS:
        workers = 0  # starting worker processes costs more than reading a handful of photos
    sizes = readable_sizes(ds.items)  # unreadable photos are named when their batch runs
    shapes = [sizes.get(image_id, (1, 1)) for image_id, _ in ds.items]
    loader = inference_loader(ds, [w / h for w, h in shapes], batch_size, workers, [w * h for w, h in shapes])
    return ds, shard_batches(loader), sizes


def predict_folder(model, cfg: Config, images_dir, device, batch_size: int = 32, workers: int = 2,
                   progress: bool = True, detect=None) -> dict:
    """Detections for every image of a folder: ``{"detections", "errors", "image_ids", "files"
    ({image_id: path}, the folder listed once), "images_per_s", "sizes"}`` (sizes as
    :func:`folder_loader` gives them, for :func:`digitdet.read.submission.write_submission`).

    ``detect`` replaces the plain model call (see :func:`digitdet.read.detect.predict_batches`); either
    is wrapped in zoom-in reading when ``cfg.zoom_read`` is on (:mod:`digitdet.read.zoom`).

    Under torchrun, detections and errors are this rank's share only (see :func:`folder_loader`).
    """
    ds, loader, sizes = folder_loader(images_dir, cfg, batch_size, workers)
    out = predict_batches(model, loader, device, progress=progress, detect=reading_detector(model, cfg, device, detect))
    return folder_output(out, ds.items, sizes)


