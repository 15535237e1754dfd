"""The report's opening answer in words: per policy family (and site), what the data say
about preference, Pass@1, speed and memory as the achieved sparsity grows, with intervals
and plain caveats; why ranks are shared; why alpha is low.

Plain rows in (`alignment.condition_table`'s, the agreement section, the preference
summary), plain dicts out; every sentence carries a machine-readable ``direction`` so a
test can check it against a planted effect."""

from __future__ import annotations

from collections.abc import Sequence

# When alpha is below this and ties dominate, the report says why alpha is low.
LOW_ALPHA = 0.2
MOSTLY_TIES = 0.6

# What each metric is called and how a value is written (bytes in MB: "5.38e+08" read
# badly in a sentence).
_METRICS = {
    "win_rate_vs_dense": ("win rate against dense (ties ½)", "{:.2f}".format),
    "pass_at_1": ("Pass@1", "{:.2f}".format),
    "tokens_per_s": ("tokens/s", "{:.1f}".format),
    "bytes_read_per_token": ("weight bytes read per token", lambda v: f"{v / 1e6:.1f} MB"),
    "peak_rss_mib": ("peak memory (MiB)", "{:.1f}".format),
}


def _percent(sparsity: float) -> str:
    return f"{sparsity * 100:.0f} %"


def _value(row: dict, key: str) -> str:
    write = _METRICS[key][1]
    text = write(row[key])
    ci = row.get(f"{key}_ci")
    if ci:
        text += " [" + ", ".join(write(v) for v in ci) + "]"
    return text


def compare(value: float, ci: Sequence[float] | None, reference: float,
            reference_ci: Sequence[float] | None) -> str:
    """"up", "down" or "none": whether `value` differs from `reference` with neither's 95 %
    interval reaching the other's ("none" also when an interval is missing: no difference
    can be shown without one)."""
    if ci is None:
        return "none"
    low, high = reference_ci if reference_ci else (reference, reference)
    if ci[0] > high:
        return "up"
    if ci[1] < low:
        return "down"
    return "none"


def _metric_sentence(key: str, dense: dict | None, points: list[dict]) -> dict | None:
    """How `key` moves from dense (or the first point) to the sparsest point."""
    points = [p for p in points if p.get(key) is not None]
    if key == "win_rate_vs_dense":
        reference = {key: 0.5, f"{key}_ci": None, "sparsity": 0.0}  # ½ = as good as dense
    else:
        reference = dense if dense and dense.get(key) is not None else None
    if not points or reference is None and len(points) < 2:
        return None
    if reference is None:
        reference, points = points[0], points[1:]
    name = _METRICS[key][0]
    changed = [
        (p, compare(p[key], p.get(f"{key}_ci"), reference[key], reference.get(f"{key}_ci")))
        for p in points
    ]
    last, direction = changed[-1]
    if key == "win_rate_vs_dense":
        start = "½ (as good as dense)"
    else:
        where = "dense" if reference is dense else reference["condition"]
        start = f"{_value(reference, key)} ({where}, {_percent(reference['sparsity'])})"
    text = f"{name[0].upper()}{name[1:]} goes from {start} to {_value(last, key)} at " \
           f"{_percent(last['sparsity'])}"
    first_change = next((p for p, d in changed if d != "none"), None)
    if direction == "none" and first_change is None:
        text += ": the intervals overlap, so no difference was detected."
    elif direction == "none":
        text += (f"; it differs at {_percent(first_change['sparsity'])} but not at the "
                 "sparsest setting (intervals overlap there).")
    else:
        word = "higher" if direction == "up" else "lower"
        since = next(p for p, d in changed if d == direction)
        text += f": {word} from {_percent(since['sparsity'])} sparsity on (intervals apart)."
    return {"metric": key, "direction": direction, "text": text}


# Said once under the answer: what the speed numbers are, and what their intervals miss.
SPEED_CAVEAT = (
    "Tokens/s and latency are wall-clock times on the worker's machine, so other work on it "
    "moves them. Their 95 % intervals cover the variation between generations: a difference "
    "inside them is noise, and one outside them can still come from load that changed while "
    "a condition ran. A speed-up is only possible where a policy skips weight bytes, and at "
    "most in proportion to the bytes its site can skip."
)


def _speed_sentence(dense: dict | None, points: list[dict]) -> dict | None:
    if points and all(p.get("skips_bytes") is False for p in points):
        sentence = _metric_sentence("tokens_per_s", dense, points)
        tail = f" ({sentence['text']})" if sentence else ""
        return {
            "metric": "tokens_per_s",
            "direction": "none",
            "text": "Masking-only condition: the engine reads every weight (its thresholds "
            "are 0), so no speed-up is possible; tokens/s differences are noise" + tail,
        }
    return _metric_sentence("tokens_per_s", dense, points)


MEMORY_CAVEAT = (
    " Peak memory is the worker process's resident set, which holds every weight under every "
    "condition (skipped weights are not read, but stay loaded); a difference between "
    "conditions can come from the order one worker ran them in (allocator state, weight "
    "layouts), not from the threshold."
)


def _memory_sentence(dense: dict | None, points: list[dict]) -> dict | None:
    """Peak memory against dense, with what a difference in it can and cannot mean."""
    sentence = _metric_sentence("peak_rss_mib", dense, points)
    if sentence and sentence["direction"] != "none":
        sentence["text"] += MEMORY_CAVEAT
    return sentence


def _bytes_sentence(points: list[dict]) -> dict | None:
    """Which bytes the series can skip, when its skipping settings agree (the bound on
    its speed-up)."""
    notes = {p.get("bytes_note") for p in points if p.get("skips_bytes")}
    if len(notes) != 1 or not (note := notes.pop()):
        return None
    return {"metric": "bytes_skippable", "direction": "none",
            "text": f"This policy {note}, which bounds its speed-up."}


def family_findings(rows: Sequence[dict]) -> list[dict]:
    """Per series (policy family and site) with points besides dense: ``series``, the
    sparsity range and ``sentences`` (each ``metric, direction, text``; direction "up",
    "down" or "none" against dense)."""
    dense = next((r for r in rows if r["family"] == "dense" and r["sparsity"] is not None), None)
    series = dict.fromkeys(r["series"] for r in rows if r["family"] != "dense")
    out = []
    for name in series:
        points = sorted(
            (r for r in rows if r["series"] == name and r["sparsity"] is not None),
            key=lambda r: r["sparsity"],
        )
        if not points:
            continue
        sentences = [
            _metric_sentence("win_rate_vs_dense", dense, points),
            _metric_sentence("pass_at_1", dense, points),
            _speed_sentence(dense, points),
            _bytes_sentence(points),
            _metric_sentence("bytes_read_per_token", dense, points),
            _memory_sentence(dense, points),
        ]
        sentences = [s for s in sentences if s]
        if len(points) == 1:
            sentences.insert(0, {"metric": "points", "direction": "none",
                                 "text": "One setting only: a point, not a curve."})
        out.append({
            "series": name,
            "n_conditions": len(points),
            "sparsity_range": [points[0]["sparsity"], points[-1]["sparsity"]],
            "sentences": sentences,
        })
    return out


def shared_ranks(bradley_terry: dict | None) -> list[dict]:
    """One entry per rank held by several conditions: ``rank``, ``conditions`` and a
    ``text`` saying why they share it."""
    if not bradley_terry:
        return []
    by_rank: dict[int, list[str]] = {}
    for row in bradley_terry["conditions"]:
        by_rank.setdefault(row["rank"], []).append(row["condition"])
    return [
        {
            "rank": rank,
            "conditions": names,
            "text": f"Rank {rank} is shared by {', '.join(names)}: none of their 95 % "
            "intervals lies wholly above another's, so the data do not order them.",
        }
        for rank, names in sorted(by_rank.items())
        if len(names) > 1
    ]


def agreement_caveat(agreement: dict, preference: dict | None) -> str | None:
    """Why alpha is low, when it is low because nearly every verdict is a tie."""
    overall = agreement.get("overall") or {}
    alpha = overall.get("alpha")
    if not preference or (alpha is not None and alpha >= LOW_ALPHA):
        return None
    n = sum(p["n"] for p in preference["pairs"])
    ties = sum(p["ties"] for p in preference["pairs"])
    if not n or ties / n < MOSTLY_TIES:
        return None
    agreement_share = (agreement.get("choice") or {}).get("percent_agreement_with_ties")
    shown = "undefined" if alpha is None else f"{alpha:.2f}"
    text = (f"Alpha is low ({shown}) because nearly every verdict is a tie ({ties / n:.0%} "
            "ties): when almost all answers are the same, chance agreement is already high and "
            "alpha cannot show agreement beyond it")
    if agreement_share is not None:
        text += f"; raters agree on {agreement_share:.0%} of verdict pairs"
    return text + "."


def findings(rows: Sequence[dict], agreement: dict, preference: dict | None) -> dict:
    """The report's opening: ``families`` (`family_findings`), ``shared_ranks``, the
    ``agreement_caveat`` (or None) and the ``speed_caveat``."""
    return {
        "families": family_findings(rows),
        "speed_caveat": SPEED_CAVEAT,
        "shared_ranks": shared_ranks(preference["bradley_terry"] if preference else None),
        "agreement_caveat": agreement_caveat(agreement, preference),
    }
