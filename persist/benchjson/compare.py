"""The epoch-time regression gate over two pytest-benchmark JSON files, following asv's rule.

A benchmark regresses when its median time grew by more than the threshold AND the change is significant. Significance
follows asv: a two-sided Mann-Whitney U test on the per-round times (`stats.data`) when both sides have enough rounds
for the test to be able to reach p < alpha; otherwise the two 95% confidence intervals of the mean must not overlap.
Both tests are persist.stats' (scipy.stats).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from persist.benchjson.summary import load_benchmarks
from persist.config import RunConfig
from persist.errors import PersistError
from persist.stats import mann_whitney_p, mean_interval

ALPHA = 0.05
ENTRY_KEYS = ("fullname", "stats")  # what the gate reads of every benchmark: its name, and its rounds in stats.data
MIN_ROUNDS_FOR_U_TEST = 5  # 5 vs 5 rounds can reach p = 0.008; 3 vs 3 cannot go below p = 0.1


@dataclass(frozen=True)
class Comparison:
    name: str
    baseline_median_s: float
    candidate_median_s: float
    ratio: float  # candidate / baseline median: > 1 is slower
    test: str  # mann-whitney-u | ci-overlap
    p_value: float | None
    significant: bool
    verdict: str  # regression | improvement | same | not comparable
    reason: str = ""  # not comparable: the first field in which the two runs differ

    def as_dict(self) -> dict:
        return asdict(self)


def compare_one(name: str, baseline: list[float], candidate: list[float], threshold: float) -> Comparison:
    base_median, cand_median = statistics.median(baseline), statistics.median(candidate)
    ratio = cand_median / base_median
    if min(len(baseline), len(candidate)) >= MIN_ROUNDS_FOR_U_TEST:
        test, p_value = "mann-whitney-u", mann_whitney_p(baseline, candidate)
        significant = p_value < ALPHA
    else:
        (b_low, b_high), (c_low, c_high) = mean_interval(baseline), mean_interval(candidate)
        test, p_value, significant = "ci-overlap", None, c_low > b_high or c_high < b_low
    verdict = "same"
    if significant and ratio > 1 + threshold:
        verdict = "regression"
    elif significant and ratio < 1 / (1 + threshold):
        verdict = "improvement"
    return Comparison(name, base_median, cand_median, ratio, test, p_value, significant, verdict)


def _device(payload: dict) -> str | None:
    info = (payload.get("machine_info") or {}).get("persist", {})
    return info.get("device_id") or info.get("device")


def baseline_file(folder: Path, payload: dict) -> Path:
    """reports/baselines/<device id>.json for the candidate's device."""
    device = _device(payload)
    if device is None:
        raise PersistError("the candidate has no machine_info.persist.device_id: was it written by `pytest bench`?")
    return folder / (re.sub(r"[^A-Za-z0-9._-]+", "-", device).strip("-") + ".json")


def _rounds(bench: dict, path) -> list[float]:
    data = bench.get("stats", {}).get("data")
    if not data:
        raise PersistError(f"{path}: benchmark {bench.get('fullname')} has no per-round data (stats.data)")
    return data


def compare_files(baseline_path, candidate_path, threshold: float = 0.10, force: bool = False) -> list[Comparison]:
    if not threshold > 0:
        raise PersistError(f"threshold={threshold * 100:g}% is not allowed: use a percentage > 0")
    candidate = load_benchmarks(candidate_path, needs=ENTRY_KEYS)
    if Path(baseline_path).is_dir():
        folder, baseline_path = Path(baseline_path), baseline_file(Path(baseline_path), candidate)
        if not baseline_path.exists():
            raise PersistError(
                f"no baseline for this device in {folder}: expected {baseline_path.name}; record one "
                f"with: pytest bench --benchmark-json {baseline_path}"
            )
    baseline = load_benchmarks(baseline_path, needs=ENTRY_KEYS)
    base_device, cand_device = _device(baseline), _device(candidate)
    if base_device != cand_device and not force:
        raise PersistError(
            f"baseline device {base_device!r} differs from candidate device {cand_device!r}: timings from different "
            "machines do not compare; pass --force to compare anyway"
        )
    base_by_name = {b["fullname"]: b for b in baseline["benchmarks"]}
    common = [b for b in candidate["benchmarks"] if b["fullname"] in base_by_name]
    if not common:
        raise PersistError(f"{baseline_path} and {candidate_path} have no benchmarks in common")
    results, facts = [], (file_facts(baseline), file_facts(candidate))
    for b in common:
        base_rounds, cand_rounds = _rounds(base_by_name[b["fullname"]], baseline_path), _rounds(b, candidate_path)
        differ = work_difference(base_by_name[b["fullname"]], b, baseline, candidate, facts)
        if differ is None:
            results.append(compare_one(b["fullname"], base_rounds, cand_rounds, threshold))
        else:
            results.append(not_comparable(b["fullname"], base_rounds, cand_rounds, differ))
    if all(r.verdict == "not comparable" for r in results):
        raise PersistError(
            f"{candidate_path} is not comparable with {baseline_path}: {results[0].name.split('::')[-1]} differs in "
            f"{results[0].reason}; compare runs of the same config"
        )
    return results


# Fields of a run's config that do not change the work a benchmark times: where the data are read from, whether they
# may be downloaded, how the device is spelled (which machine it is, is the device check's business, and --force's),
# and what happens outside the timed epochs (evaluation, epoch counts and budgets of a training run).
NOT_WORK_FIELDS = (
    "data_root",
    "download",
    "storage_dir",
    "device",
    "eval_batch_size",
    "eval_every",
    "epochs",
    "budget_s",
    "budget_sample_steps",
)
# A benchmark with no recorded config compares on these: the bench profile, pytest params, and these extra_info keys.
PARAMETER_KEYS = (
    "kind",
    "pipeline",
    "batch_size",
    "persistency",
    "lr_schedule",
    "storage",
    "augment",
    "reuse",
    "delay_ms",
    "model",
    "per_rank_batch_size",
    "ranks",
    "backend",
    "compute",
)


# Fields that are not the work of one kind: model_only times steps on one batch already on the device, however the
# data were stored.
KIND_NOT_WORK_FIELDS = {"model_only": ("storage", "jpeg_quality")}
# The bench's options that reach every cell of a workload (bench/options.py's setup.base): a cell that does not
# record one ran the value the file's other cells of its workload record.
FILE_KEYS = ("storage", "dataset", "compute")  # compute: an emulated cell never matches a real one


def work_parameters(bench: dict, payload: dict) -> dict:
    """What decides the work a benchmark timed: its run config less NOT_WORK_FIELDS (a field a file lacks takes
    RunConfig's default), or, with no config, its profile, params and PARAMETER_KEYS."""
    extra = bench.get("extra_info") or {}
    config, skip = extra.get("config"), (*NOT_WORK_FIELDS, *KIND_NOT_WORK_FIELDS.get(extra.get("kind"), ()))
    if config:
        defaults = {f.name: f.default for f in fields(RunConfig)}
        return {k: v for k, v in {**defaults, **config}.items() if k not in skip}
    profile = ((payload.get("machine_info") or {}).get("persist") or {}).get("profile")
    found = {"profile": profile, "params": bench.get("params")}
    return {**found, **{k: extra[k] for k in PARAMETER_KEYS if k in extra and k not in skip}}


def _workload(bench: dict) -> str:
    extra = bench.get("extra_info") or {}
    module = str(bench.get("fullname", "")).split("::")[0]
    return extra.get("workload") or ("imagenet" if module.endswith("bench_imagenet.py") else "paper")


def file_facts(payload: dict) -> dict:
    """(workload, FILE_KEYS name) -> the one value the file's cells of that workload record for it (absent where
    none records it, or they differ)."""
    seen: dict[tuple[str, str], dict] = {}  # repr -> value: a value may be unhashable (a list)
    for bench in payload["benchmarks"]:
        params = work_parameters(bench, payload)
        for name in FILE_KEYS:
            if name in params:
                seen.setdefault((_workload(bench), name), {})[repr(params[name])] = params[name]
    return {key: next(iter(values.values())) for key, values in seen.items() if len(values) == 1}


def _with_facts(bench: dict, params: dict, facts: dict) -> tuple[dict, set]:
    """A cell's parameters with the FILE_KEYS it does not record filled in: from the file's other cells, else
    RunConfig's default (the value before the option existed); and the names filled in from the file."""
    skip = KIND_NOT_WORK_FIELDS.get((bench.get("extra_info") or {}).get("kind"), ())
    defaults, filled, inferred = {f.name: f.default for f in fields(RunConfig)}, dict(params), set()
    for name in FILE_KEYS:
        if name in params or name in skip:
            continue
        fact = facts.get((_workload(bench), name))
        filled[name] = defaults[name] if fact is None else fact
        inferred |= set() if fact is None else {name}
    return filled, inferred


def work_difference(
    baseline: dict, candidate: dict, base_payload: dict, cand_payload: dict, facts: tuple[dict, dict] = ({}, {})
) -> str | None:
    """None when two benchmarks timed the same work; else the first differing parameter, as `name=base (candidate
    value)`. `facts`: each file's file_facts, for the FILE_KEYS a cell does not record itself."""
    base, base_inferred = _with_facts(baseline, work_parameters(baseline, base_payload), facts[0])
    cand, cand_inferred = _with_facts(candidate, work_parameters(candidate, cand_payload), facts[1])
    for name in [*base, *(k for k in cand if k not in base)]:
        if base.get(name) != cand.get(name):
            source = ", as the files' other cells record it" if name in base_inferred | cand_inferred else ""
            return f"{name}={base.get(name)!r} (candidate {cand.get(name)!r}){source}"
    return None


def not_comparable(name: str, baseline: list[float], candidate: list[float], reason: str) -> Comparison:
    base_median, cand_median = statistics.median(baseline), statistics.median(candidate)
    return Comparison(name, base_median, cand_median, cand_median / base_median, "-", None, False, "not comparable",
                      reason)  # fmt: skip


def render_comparisons(results: list[Comparison], threshold_pct: float):
    """The gate's verdicts as a rich table (computed by compare_files, rendered here)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        "benchmark",
        "baseline s",
        "candidate s",
        "ratio",
        "test",
        "p",
        "verdict",
        title=f"persist compare (threshold {threshold_pct:g}%, medians of per-round epoch times)",
    )
    for r in results:
        style = {"regression": "bold red", "improvement": "green", "not comparable": "yellow"}.get(r.verdict)
        table.add_row(
            escape(r.name.split("::")[-1]),  # the test id, its [params] not read as markup; --json keeps the full name
            f"{r.baseline_median_s:.4f}",
            f"{r.candidate_median_s:.4f}",
            f"{r.ratio:.3f}",
            r.test,
            "-" if r.p_value is None else f"{r.p_value:.3g}",
            r.verdict + (f": {escape(r.reason)}" if r.reason else ""),
            style=style,
        )
    return table
