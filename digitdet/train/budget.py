"""Time budget (``cfg.time_budget_min``): the lr schedule planned, and re-planned, to end within it.

After ``PLAN_AFTER_STEPS`` optimizer steps, every ``REPLAN_EVERY_STEPS`` steps after that, and
after each epoch, the measured time per step sets how many steps the schedule has (at most
``cfg.epochs`` worth), so a 60-minute run anneals to lr 0 at ~58 minutes instead of being cut
mid-schedule. The plan is rank 0's, sent to every rank, so all plan alike.
"""
from __future__ import annotations

import logging

from digitdet.distributed import broadcast_object

log = logging.getLogger("digitdet")

PLAN_AFTER_STEPS = 20  # optimizer steps timed before a time-budgeted run first plans its schedule
# ... and it plans again every so many steps, timed from the end of the first step (which also
# starts the loader's workers): anything that slows the first 20 steps alone, such as another
# job on the machine, otherwise sets the whole schedule (docs/results.md, "Time budget").
REPLAN_EVERY_STEPS = 200


def replan_due(steps: int) -> bool:
    """Whether the schedule is planned again after this call's ``steps``-th optimizer step."""
    return steps >= PLAN_AFTER_STEPS and (steps - PLAN_AFTER_STEPS) % REPLAN_EVERY_STEPS == 0


def plan_total_steps(steps_done: int, seconds_per_step: float, elapsed_s: float, budget_s: float,
                     max_steps: int, margin: float = 0.97) -> int:
    """Optimizer steps a run can take in total so that its training ends within ``budget_s``.

    ``steps_done`` steps took ``elapsed_s`` so far; the rest go at ``seconds_per_step``
    (measured, evaluation time included). ``margin`` keeps a little of the budget for the
    final validation and for speed that drifts. Never more than ``max_steps`` (the epochs
    asked for), never fewer than ``steps_done + 1``.
    """
    if seconds_per_step <= 0:
        return max_steps
    fit_in = int((budget_s * margin - elapsed_s) / seconds_per_step)
    return max(min(max_steps, steps_done + fit_in), min(steps_done + 1, max_steps))


def plan_schedule(prog: dict, steps_done: int, seconds_per_step: float, cfg, steps_per_epoch: int) -> None:
    """Set ``prog["total_steps"]``, the lr schedule's length, to what fits the rest of the budget
    at ``seconds_per_step`` after ``steps_done`` optimizer steps of the run."""
    total = broadcast_object(plan_total_steps(steps_done, seconds_per_step, prog["elapsed_s"],
                                              cfg.time_budget_min * 60, cfg.epochs * steps_per_epoch))
    if total != prog["total_steps"]:
        log.info("time budget %.1f min at %.2f s/step: the lr schedule ends after %d optimizer steps "
                 "(%.2f epochs; %d done)", cfg.time_budget_min, seconds_per_step, total,
                 total / steps_per_epoch, steps_done)
    prog["total_steps"] = total


def out_of_time(prog: dict, steps_done: int, cfg, steps_per_epoch: int) -> bool:
    """The budget's schedule is done (it planned fewer steps than the epochs asked, and they are
    taken), or the budget's time is up."""
    total = prog["total_steps"]
    planned_end = total < cfg.epochs * steps_per_epoch and steps_done >= total
    return planned_end or broadcast_object(prog["elapsed_s"] > cfg.time_budget_min * 60)
