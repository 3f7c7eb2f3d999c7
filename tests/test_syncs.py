"""The sync audit's bookkeeping on the CPU: torch's debug mode is faked by warnings raised where a sync would be."""

import warnings

import torch

from persist.measure.syncs import NO_CUDA, count_syncs

SYNC = "called a synchronizing CUDA operation"


def _epoch():
    for _ in range(3):
        warnings.warn(SYNC, UserWarning, stacklevel=1)  # a stray sync, three times
    # deliberate sync: the loss, once
    warnings.warn(SYNC, UserWarning, stacklevel=1)


def test_each_sync_is_placed_in_our_code_and_checked_for_its_mark(monkeypatch):
    modes = []
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    audit = count_syncs(_epoch, debug_mode=True)
    assert modes == ["warn", 0]  # on for the work, then back as it was
    assert audit["syncs"] == 4 and audit["unmarked"] == 3
    stray, marked = audit["at"]
    assert stray["line"].startswith("tests/test_syncs.py:") and stray["count"] == 3 and not stray["marked"]
    assert marked["count"] == 1 and marked["marked"]


def test_without_cuda_the_work_runs_and_the_audit_says_why_nothing_was_counted():
    ran = []
    assert count_syncs(lambda: ran.append(1), debug_mode=False) == {"available": False, "reason": NO_CUDA}
    assert ran == [1]
