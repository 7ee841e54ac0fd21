"""train_step: gradient accumulation steps the optimizer and syncs DDP only where it should."""
from contextlib import contextmanager

import torch

from digitdet.config import Config
from digitdet.train.step import accumulate, train_step


def train_one_epoch(model, optimizer, scheduler, loader, device, cfg) -> dict:
    """The loop of train.fit over one epoch: one train_step per group of cfg.grad_accum batches."""
    sums = {}
    for batches in accumulate(loader, cfg.grad_accum):
        for k, v in train_step(model, optimizer, scheduler, batches, device, cfg).items():
            sums[k] = sums.get(k, 0) + v
    return {**{k: v / sums["batches"] for k, v in sums.items() if k.startswith("loss")}, "steps": sums["batches"]}


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
    out = train_one_epoch(model, optimizer, scheduler, loader, torch.device("cpu"), cfg)
    # batches 2 and 4 complete a group of 2; batch 5, the last, steps with what it has
    assert out["steps"] == 5 and len(steps) == 1 + 3  # LambdaLR calls the lambda once at construction
    assert model.synced == [False, True, False, True, True]


def test_ema_follows_the_weights_with_the_ramped_decay():
    from digitdet.train.optim import build_ema, ema_decay_at

    assert build_ema(torch.nn.Linear(1, 1), 0.0) is None
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = build_ema(model, 0.99)
    history = []
    for step in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))
        model.train()(torch.randn(4, 2))  # moves BatchNorm's statistics and its integer counter
        history.append(float(step))
        ema.update_parameters(model)
    # the first update copies; update n (n >= 1) moves by 1 - decay_at(n)
    expected = history[0]
    for n, value in enumerate(history[1:], start=1):
        d = ema_decay_at(n, 0.99)
        expected = d * expected + (1 - d) * value
    assert ema_decay_at(0, 0.99) == 0.1 and ema_decay_at(10**6, 0.99) == 0.99
    assert torch.allclose(ema.module[0].weight, torch.full((2, 2), expected))
    assert not torch.allclose(ema.module[0].weight, model[0].weight)
    assert ema.module[1].num_batches_tracked == model[1].num_batches_tracked == 30  # copied, not averaged


def test_loss_weights_scale_each_term_of_the_minimised_sum():
    model = _StubDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    loader = [([torch.ones(3, 2, 2)], [{}])]  # loss_classifier = (1 x 12)^2 = 144, the rest 0
    device = torch.device("cpu")
    plain = train_one_epoch(model, optimizer, scheduler, loader, device, Config())
    cfg = Config().override(["loss_weights={loss_classifier: 2.5}"])
    weighted = train_one_epoch(model, optimizer, scheduler, loader, device, cfg)
    assert plain["loss"] == plain["loss_classifier"] == 144.0
    assert weighted["loss"] == 2.5 * weighted["loss_classifier"] == 360.0
