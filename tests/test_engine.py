"""train_one_epoch: gradient accumulation steps the optimizer and syncs DDP only where it should."""
from contextlib import contextmanager

import torch

from digitdet.config import Config
from digitdet.engine import train_one_epoch


class _StubDetector(torch.nn.Module):
    """Returns torchvision's loss dict; records which batches ran under no_sync (as DDP would skip
    their all-reduce)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.synced, self._in_no_sync = [], False

    @contextmanager
    def no_sync(self):
        self._in_no_sync = True
        try:
            yield
        finally:
            self._in_no_sync = False

    def forward(self, images, targets):
        self.synced.append(not self._in_no_sync)
        loss = (self.w * torch.stack([im.sum() for im in images]).sum()) ** 2
        return {"loss_classifier": loss, "loss_box_reg": loss * 0, "loss_objectness": loss * 0,
                "loss_rpn_box_reg": loss * 0}


def test_grad_accum_steps_every_n_batches_and_syncs_only_then():
    model = _StubDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    steps = []
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: steps.append(s) or 1.0)
    loader = [([torch.ones(3, 4, 4)], [{}]) for _ in range(5)]
    cfg = Config(grad_accum=2, clip_grad=0.0)
    out = train_one_epoch(model, optimizer, scheduler, loader, torch.device("cpu"), 0, cfg, progress=False)
    # batches 2 and 4 complete a group of 2; batch 5, the last, steps with what it has
    assert out["steps"] == 5 and len(steps) == 1 + 3  # LambdaLR calls the lambda once at construction
    assert model.synced == [False, True, False, True, True]
