"""Where a run stands: its cumulative counts, the next evaluation point on the fresh-sample cadence, and its budget.

Evaluation falls every `eval_every` fresh (global) training samples, so runs with any K are observed at the same data
consumed. Counts are cumulative over the finished epochs (a resumed run starts from its records), plus the counts of
the epoch in progress where a caller gives them.
"""

from __future__ import annotations

from persist.records import EpochRecord, EvalRecord

COUNTED = ("fresh_samples", "sample_steps", "steps", "train_s")


class RunCounters:
    def __init__(self, eval_every: int, budget_s: float | None = None, budget_sample_steps: int | None = None):
        self.eval_every, self.budget_s, self.budget_sample_steps = eval_every, budget_s, budget_sample_steps
        self.seen = {"fresh_samples": 0, "sample_steps": 0, "steps": 0, "train_s": 0.0}
        self.next_eval = eval_every  # the origin (0 samples) is evaluated by train_run

    def add(self, fresh_samples: int, sample_steps: int, steps: int, train_s: float) -> None:
        for key, value in zip(COUNTED, (fresh_samples, sample_steps, steps, train_s), strict=True):
            self.seen[key] += value
        self.next_eval = (self.seen["fresh_samples"] // self.eval_every + 1) * self.eval_every

    def add_records(self, records: list[EpochRecord]) -> None:
        """The finished epochs of a resumed run."""
        for r in records:
            self.add(r.fresh_samples, r.sample_steps, r.steps, r.wall_s)

    def budget_met(self, sample_steps: int = 0, train_s: float = 0.0) -> bool:
        """Whether the budget is spent, after this epoch's sample_steps and train_s so far. The time budget reads the
        host clock without a sync: on a GPU the host may run ahead of the device by the queued work."""
        if self.budget_sample_steps is not None:
            return self.seen["sample_steps"] + sample_steps >= self.budget_sample_steps
        if self.budget_s is not None:
            return self.seen["train_s"] + train_s >= self.budget_s
        return False

    def eval_record(
        self, epoch: int, evaluated: dict, fresh: int = 0, sample_steps: int = 0, steps: int = 0, train_s: float = 0.0
    ) -> EvalRecord:
        """An evaluation at the cumulative counts plus this epoch's (the arguments); advances the cadence."""
        record = EvalRecord(
            epoch=epoch,
            fresh_samples_seen=self.seen["fresh_samples"] + fresh,
            sample_steps_seen=self.seen["sample_steps"] + sample_steps,
            steps_seen=self.seen["steps"] + steps,
            train_s=self.seen["train_s"] + train_s,
            test_loss=evaluated["test_loss"],
            test_acc=evaluated["test_acc"],
            eval_s=evaluated["eval_s"],
        )
        self.next_eval = (record.fresh_samples_seen // self.eval_every + 1) * self.eval_every
        return record
