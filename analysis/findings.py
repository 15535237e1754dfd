"""The report's opening answer in words: per policy family (and site), what the data say
about preference, Pass@1, speed and memory as the achieved sparsity grows, with intervals
and plain caveats; why ranks are shared; why alpha is low.

Plain rows in (`alignment.condition_table`'s, the agreement section, the preference
summary), plain dicts out; every sentence carries a machine-readable ``direction`` so a
test can check it against a planted effect."""

from __future__ import annotations

from collections.abc import Sequence

from analysis.paired import ALPHA
from analysis.preference import holm

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
    "kl_from_dense": ("KL from dense", "{:.4f}".format),
    "rss_increase_mib": (
        "memory added over the worker's resident set at the generation's start (MiB)",
        "{:.1f}".format,
    ),
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


def _sign(value: float | None, centre: float) -> int:
    if value is None or value == centre:
        return 0
    return 1 if value > centre else -1


def point_test(key: str, row: dict) -> dict | None:
    """The paired test of one condition's `key` against dense (`alignment.condition_table`
    puts them on the row): ``p`` (unadjusted; None when not testable), ``sign`` (+1 higher
    than dense, −1 lower, 0 equal), ``test`` (its name), ``detectable`` (the smallest change
    it could find, in words, or None), ``detail`` (flips, machines; may be "") and ``note``
    (why there is no test). None when the row has nothing to test."""
    if key == "win_rate_vs_dense":
        if row.get("win_rate_vs_dense") is None:
            return None
        smallest = row.get("win_rate_vs_dense_detectable")
        return {
            "p": row.get("win_rate_vs_dense_p"),
            "sign": _sign(row["win_rate_vs_dense"], 0.5),
            "test": "item × rater cluster t test of the win rate against ½",
            "detectable": None if smallest is None else f"a win rate {smallest:.2f} from ½",
            "detail": "",
            "note": "fewer than two judged items" if row.get("win_rate_vs_dense_p") is None
            else None,
        }
    if key == "pass_at_1":
        versus = row.get("pass_at_1_vs_dense")
        if not versus:
            return None
        smallest = versus["detectable"]
        return {
            "p": versus["p"] if versus["n_problems"] else None,
            "sign": _sign(versus["difference"], 0.0),
            "test": versus["test"] or "McNemar exact",
            "detectable": None if smallest is None else f"{smallest:.2f} in Pass@1",
            "detail": f"dense right → wrong on {versus['right_to_wrong']}, wrong → right on "
            f"{versus['wrong_to_right']}, over {versus['n_problems']} problems both answered",
            "note": versus["difference_ci_note"] if not versus["n_problems"] else None,
        }
    versus = row.get(f"{key}_vs_dense")
    if not versus or versus["estimate"] is None:
        return {"p": None, "sign": 0, "test": "", "detectable": None, "detail": "",
                "note": versus["note"] if versus else None} if versus else None
    ratio = versus["scale"] == "ratio"
    smallest = versus["detectable"]
    machines = versus["machines"]
    return {
        "p": versus["p"],
        "sign": _sign(versus["estimate"], 1.0 if ratio else 0.0),
        "test": "paired t test on the log ratio to dense" if ratio
        else "paired t test of the difference from dense",
        "detectable": None if smallest is None
        else (f"a ratio of {smallest:.2f}" if ratio else f"{smallest:.1f} MiB"),
        "detail": f"{versus['n_pairs']} item(s) paired on the same machine"
        + (f"; machines: {', '.join(machines)}" if machines else ""),
        "note": versus["note"],
    }


def _metric_sentence(key: str, dense: dict | None, points: list[dict]) -> dict | None:
    """How `key` moves from dense to the sparsest point, said only from the paired tests
    of each point against dense (`point_test`), Holm-adjusted over the series' points."""
    points = [p for p in points if p.get(key) is not None]
    tests = [point_test(key, p) for p in points]
    points = [p for p, t in zip(points, tests, strict=True) if t is not None]
    tests = [t for t in tests if t is not None]
    reference = (
        {key: 0.5, "sparsity": 0.0} if key == "win_rate_vs_dense"
        else dense if dense and dense.get(key) is not None else None
    )
    if not points or reference is None:
        return None
    adjusted = holm([t["p"] for t in tests])
    directions = [
        ("up" if t["sign"] > 0 else "down") if p is not None and p < ALPHA and t["sign"]
        else "none"
        for t, p in zip(tests, adjusted, strict=True)
    ]
    name = _METRICS[key][0]
    last, last_test, last_p, direction = points[-1], tests[-1], adjusted[-1], directions[-1]
    start = ("½ (as good as dense)" if key == "win_rate_vs_dense"
             else f"{_value(reference, key)} (dense)")
    text = (f"{name[0].upper()}{name[1:]} goes from {start} to {_value(last, key)} at "
            f"{_percent(last['sparsity'])}")
    tested = sum(p is not None for p in adjusted)
    if not tested:
        why = next((t["note"] for t in reversed(tests) if t["note"]), "no paired data")
        return {"metric": key, "direction": "none", "text": f"{text}: not tested ({why})."}
    family = f"Holm over {tested} setting{'s' if tested > 1 else ''}" if tested > 1 else ""
    how = ", ".join(part for part in (
        last_test["test"], family, f"p {_p(last_p)} at the sparsest" if last_p is not None
        else "", last_test["detail"]) if part)
    first_change = next((p for p, d in zip(points, directions, strict=True) if d != "none"),
                        None)
    if direction == "none" and first_change is None:
        text += f": no difference was detected ({how})"
        if last_test["detectable"]:
            text += (f"; the smallest change these data could detect (80 % power) is about "
                     f"{last_test['detectable']}")
        text += "."
    elif direction == "none":
        text += (f"; it differs at {_percent(first_change['sparsity'])} but not at the "
                 f"sparsest setting ({how}).")
    else:
        word = "higher" if direction == "up" else "lower"
        since = next(p for p, d in zip(points, directions, strict=True) if d == direction)
        text += f": {word} from {_percent(since['sparsity'])} sparsity on ({how})."
    return {"metric": key, "direction": direction, "text": text}


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"= {value:.3f}"


# Said once under the answer: what the speed numbers are, and what their tests miss.
SPEED_CAVEAT = (
    "Tokens/s and latency are wall-clock times on the worker's machine, so other work on it "
    "moves them. Each condition's speed is compared with dense as the ratio on the same item "
    "and the same machine (never across machines), by a paired t test on the log ratio; load "
    "that changed while one condition ran can still move it. A speed-up is only possible "
    "where a policy skips weight bytes, and at most in proportion to the bytes its site can "
    "skip."
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
# With every weight resident, "no difference" is what the design guarantees, not a finding.
MEMORY_CANNOT_MOVE = (
    " Every weight stays loaded under every condition, so the threshold cannot move memory: "
    "no difference here is true by construction, not a finding."
)


def _memory_sentence(dense: dict | None, points: list[dict]) -> dict | None:
    """Memory against dense (the increase over the worker's resident set at each
    generation's start where recorded, else the peak), with what a difference in it can and
    cannot mean."""
    recorded = any(p.get("rss_increase_mib") is not None for p in points)
    sentence = _metric_sentence("rss_increase_mib" if recorded else "peak_rss_mib", dense, points)
    if sentence and sentence["direction"] != "none":
        sentence["text"] += MEMORY_CAVEAT
    elif sentence and "no difference was detected" in sentence["text"]:
        sentence["text"] += MEMORY_CANNOT_MOVE
    return sentence


def _divergence_sentence(points: list[dict]) -> dict | None:
    """How far the series moves the model from dense on dense's own answers (teacher-forced:
    mean per-token KL and top-1 agreement), from its first measured setting to its last;
    descriptive (dense is 0 and 1 by construction, so there is nothing to test against)."""
    measured = [p for p in points if p.get("kl_from_dense") is not None]
    if not measured:
        return None

    def at(p: dict) -> str:
        agreement = p.get("top1_agreement_with_dense")
        shown = "" if agreement is None else f", top-1 agreement {agreement:.2f}"
        return f"KL {_value(p, 'kl_from_dense')} nats{shown} at {_percent(p['sparsity'])}"

    first, last = measured[0], measured[-1]
    span = at(last) if first is last else f"{at(first)} to {at(last)}"
    return {"metric": "kl_from_dense", "direction": "none",
            "text": f"Divergence from dense on dense's own answers (teacher-forced): {span}."}


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
    first_dense = next(
        (r for r in rows if r["family"] == "dense" and r["sparsity"] is not None), None
    )
    series = dict.fromkeys(r["series"] for r in rows if r["family"] != "dense")
    out = []
    for name in series:
        points = sorted(
            (r for r in rows if r["series"] == name and r["sparsity"] is not None),
            key=lambda r: r["sparsity"],
        )
        if not points:
            continue
        # A series of one model is read against that model's dense condition.
        dense = next((r for r in rows if r["condition"] == points[0].get("dense_condition")
                      and r["sparsity"] is not None), first_dense)
        sentences = [
            _metric_sentence("win_rate_vs_dense", dense, points),
            _metric_sentence("pass_at_1", dense, points),
            _speed_sentence(dense, points),
            _bytes_sentence(points),
            _metric_sentence("bytes_read_per_token", dense, points),
            _memory_sentence(dense, points),
            _divergence_sentence(points),
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
