"""The report's figures as base64 PNG strings (matplotlib, Agg backend: no display, no
files), so an HTML report can embed them and stay self-contained."""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES = (
    ("bt_rating", "Bradley–Terry rating"),
    ("win_rate_vs_dense", "Win rate vs dense (ties ½)"),
    ("pass_at_1", "Pass@1"),
    ("tokens_per_s", "Tokens / s"),
    ("latency_s", "Latency (s)"),
    ("bytes_read_per_token", "Weight MB read / token"),
    ("peak_rss_mib", "Peak RSS (MiB)"),
)


_DENSE_MARKERS = ("*", "D", "P", "X", "s")
# Drawn in other units than the rows hold: bytes as MB (no "1e8" scale above the panel).
_SCALE = {"bytes_read_per_token": 1e-6}


def _scaled(points: Sequence[dict], key: str) -> list[dict]:
    """``points`` with ``key`` and its interval in the panel's unit."""
    factor = _SCALE.get(key)
    if factor is None:
        return list(points)
    ci_key = f"{key}_ci"
    return [
        {**p, key: p[key] * factor,
         ci_key: [v * factor for v in p[ci_key]] if p.get(ci_key) else p.get(ci_key)}
        for p in points
    ]  # fmt: skip


def _plain_text(draw: Callable[..., str]) -> Callable[..., str]:
    """Draw with mathtext off: condition names are user text, and `$…$` in one would make
    matplotlib parse (and fail on) it as TeX."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> str:
        # No offset axes: "+1.22e3" above a panel drew a 0.15 MiB difference as a cliff.
        with plt.rc_context({"text.parse_math": False, "axes.formatter.useoffset": False}):
            return draw(*args, **kwargs)

    return wrapper


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _errors(points: Sequence[dict], key: str) -> list[list[float]] | None:
    """Error bar lengths below and above each value from its ``<key>_ci``, or None when any
    point has no interval (matplotlib needs all or none)."""
    ci_key = f"{key}_ci"
    if not all(p.get(ci_key) for p in points):
        return None
    return [
        [max(0.0, p[key] - p[ci_key][0]) for p in points],
        [max(0.0, p[ci_key][1] - p[key]) for p in points],
    ]


@_plain_text
def alignment_figure(rows: Sequence[dict]) -> str:
    """Every metric against the achieved sparsity (1 − mean active fraction), one colour
    and legend entry per series (policy family and site, and the model when several), dense
    as its own point (one marker per model). Bars are 95 % intervals on both axes wherever
    there are some; a series with one point is drawn as a point, not a line. The
    Bradley–Terry panel adds each series' style-controlled ratings, dashed, when the report
    has them."""
    series = list(dict.fromkeys(r["series"] for r in rows if r["family"] != "dense"))
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(series)}
    # Dense as black points, one marker per model when the study has several.
    dense_series = list(dict.fromkeys(r["series"] for r in rows if r["family"] == "dense"))
    groups = [(name, [r for r in rows if r["family"] == "dense" and r["series"] == name],
               "black", _DENSE_MARKERS[i % len(_DENSE_MARKERS)])
              for i, name in enumerate(dense_series)]
    groups += [(name, [r for r in rows if r["series"] == name], colours[name], "o")
               for name in series]
    figure, axes = plt.subplots(2, 4, figsize=(15, 7))
    # One sparsity range on every panel, so that a point sits at the same x on each.
    reach = [v for r in rows if r["sparsity"] is not None
             for v in (r["sparsity"], *(r.get("sparsity_ci") or ()))]
    x_range = (-0.03, max(reach, default=1.0) * 1.05 + 0.03)
    for ax, (key, title) in zip(axes.flat, CURVES, strict=False):
        for name, members, colour, marker in groups:
            points = _scaled(sorted(
                (r for r in members if r["sparsity"] is not None and r.get(key) is not None),
                key=lambda r: r["sparsity"],
            ), key)  # fmt: skip
            if not points:
                continue
            ax.errorbar(
                [p["sparsity"] for p in points],
                [p[key] for p in points],
                xerr=_errors(points, "sparsity"),
                yerr=_errors(points, key),
                color=colour,
                marker=marker,
                markersize=9 if marker == "*" else 6,
                linestyle="-" if len(points) > 1 else "none",
                capsize=3,
                label=name,
            )
            controlled = [p.get("bt_rating_controlled") for p in points]
            if key == "bt_rating" and None not in controlled:
                # The same series at equal output style (length, formatting, tests passed).
                ax.plot([p["sparsity"] for p in points], controlled, linestyle="--",
                        marker="x", color=colour, label=f"{name}, style-controlled")
        if key == "win_rate_vs_dense":  # ½: as good as dense
            ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set_xlim(*x_range)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("achieved sparsity (1 − active fraction)", fontsize=8)
        ax.grid(alpha=0.3)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
    legend = axes.flat[-1]
    legend.axis("off")
    handles = {}
    for ax in axes.flat[:-1]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    labels = list(handles)
    if labels:
        legend.legend([handles[k] for k in labels], labels, title="policy family · site",
                      loc="center")
    figure.tight_layout()
    return _png(figure)


@_plain_text
def divergence_figure(rows: Sequence[dict], relation: dict) -> str:
    """Divergence from dense against the achieved sparsity (KL and top-1 agreement, one
    colour per series, 95 % intervals on both axes), and the win rate against dense
    against the mean KL per sparse condition with the least-squares line
    (`analysis.divergence`) where it was estimated."""
    series = list(dict.fromkeys(r["series"] for r in rows if r["family"] != "dense"))
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(series)}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, title) in zip(axes[:2], (("kl_from_dense", "KL from dense (nats)"),
                                           ("top1_agreement_with_dense",
                                            "Top-1 agreement with dense")), strict=True):
        for name in series:
            points = sorted((r for r in rows if r["series"] == name and r["sparsity"] is not None
                             and r.get(key) is not None), key=lambda r: r["sparsity"])
            if points:
                ax.errorbar([p["sparsity"] for p in points], [p[key] for p in points],
                            xerr=_errors(points, "sparsity"), yerr=_errors(points, key),
                            color=colours[name], marker="o",
                            linestyle="-" if len(points) > 1 else "none", capsize=3, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("achieved sparsity (1 − active fraction)", fontsize=8)
    by_name = {r["condition"]: r for r in rows}
    ax = axes[2]
    level = relation["condition_level"]
    for point in level["points"]:
        row = by_name.get(point["condition"], {})
        ax.errorbar(point["kl_from_dense"], point["win_rate_vs_dense"],
                    xerr=_errors([row], "kl_from_dense") if row else None,
                    yerr=_errors([row], "win_rate_vs_dense") if row else None,
                    color=colours.get(row.get("series"), "grey"), marker="o", capsize=3)
        ax.annotate(point["condition"], (point["kl_from_dense"], point["win_rate_vs_dense"]),
                    fontsize=7, xytext=(4, 3), textcoords="offset points")
    if level["slope"] is not None:
        xs = [p["kl_from_dense"] for p in level["points"]]
        ys = [p["win_rate_vs_dense"] for p in level["points"]]
        centre_x, centre_y = sum(xs) / len(xs), sum(ys) / len(ys)
        line = [min(xs), max(xs)]
        ax.plot(line, [centre_y + level["slope"] * (x - centre_x) for x in line],
                color="black", linewidth=1, linestyle="--", label="least squares")
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
    ax.set_ylim(0, 1)
    ax.set_title("Win rate vs dense against KL from dense", fontsize=10)
    ax.set_xlabel("mean KL from dense (nats)", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
    if series:
        axes[0].legend(fontsize=7, title="policy family · site", title_fontsize=7)
    figure.tight_layout()
    return _png(figure)


@_plain_text
def ratings_figure(bradley_terry: dict) -> str:
    """Bradley–Terry ratings with their 95 % CIs (items and raters as clusters), best
    first."""
    rows = bradley_terry["conditions"]
    figure, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.2))
    for i, row in enumerate(rows):
        low, high = row["rating_ci"] or (row["rating"], row["rating"])
        ax.plot([low, high], [i, i], color="tab:blue")
        ax.plot(row["rating"], i, "o", color="tab:blue")
    ax.set_yticks(range(len(rows)), [r["condition"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("Bradley–Terry rating (Elo scale), 95 % CI, items and raters as clusters")
    ax.grid(alpha=0.3)
    return _png(figure)


# Qualities that are shares: their axis is always 0 to 1, so equal values (every Pass@1 0)
# never draw a ±0.04 axis with negative Pass@1 on it.
_SHARES = {"pass_at_1", "win_rate_vs_dense"}


def pareto_labels(points: Sequence[tuple[float, float]], *, x_span: float, y_span: float,
                  near: float = 0.03) -> list[list[int]]:
    """Groups of point indices that one label names: points closer than `near` of each
    axis's span to a group's first point share its label ("2, 5"), so labels of points on
    top of each other do not overlap. Groups in the points' order, each sorted."""
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(points):
        for group in groups:
            gx, gy = points[group[0]]
            if abs(x - gx) <= near * x_span and abs(y - gy) <= near * y_span:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


@_plain_text
def pareto_figure(rows: Sequence[dict], front: Sequence[str], quality: str) -> str:
    """Quality (`quality`) against tokens/s; the Pareto front is joined and highlighted.
    Points carry numbers (points at one place share a label) and the legend names them,
    so long condition names never overlap; a share's axis is 0 to 1."""
    figure, ax = plt.subplots(figsize=(8, 4.5))
    points = [r for r in rows if r[quality] is not None and r["tokens_per_s"] is not None]
    xy = [(r["tokens_per_s"], r[quality]) for r in points]
    xs, ys = [x for x, _ in xy], [y for _, y in xy]
    x_span = (max(xs) - min(xs)) if xs else 1.0
    y_span = 1.0 if quality in _SHARES else ((max(ys) - min(ys)) if ys else 1.0)
    for number, row in enumerate(points, start=1):
        on_front = row["condition"] in front
        ax.plot(row["tokens_per_s"], row[quality], "o", color="tab:red" if on_front else "grey",
                label=f"{number}  {row['condition']}{' (front)' if on_front else ''}")
    for group in pareto_labels(xy, x_span=x_span or 1.0, y_span=y_span or 1.0):
        ax.annotate(", ".join(str(i + 1) for i in group), xy[group[0]], fontsize=9,
                    xytext=(5, 4), textcoords="offset points")
    line = sorted((r for r in points if r["condition"] in front), key=lambda r: r["tokens_per_s"])
    ax.plot(
        [r["tokens_per_s"] for r in line],
        [r[quality] for r in line],
        "--",
        color="tab:red",
        label="Pareto front",
    )
    if quality in _SHARES:
        ax.set_ylim(-0.03, 1.03)
    if ys and len(set(ys)) == 1:
        ax.set_title(f"{dict(CURVES)[quality]} is {ys[0]:g} for every condition", fontsize=10)
    ax.set_xlabel("tokens / s")
    ax.set_ylabel(dict(CURVES)[quality])
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return _png(figure)


@_plain_text
def subgroup_figure(groupings: Sequence[tuple[str, Sequence[dict]]]) -> str:
    """One panel per grouping (a profile question, the rater clusters): each group's share
    of decisive verdicts won by the sparser output per condition pair, against the pair's
    mean sparsity gap, with Wilson 95 % CIs. Groups without statistics are left out."""
    columns = min(3, len(groupings))
    rows = -(-len(groupings) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    for ax, (title, groups) in zip(axes.flat, groupings, strict=False):
        gaps = [p["gap"] for group in groups for p in group.get("pairs") or []]
        # Groups side by side at each gap, so that their error bars do not hide each other.
        dodge = 0.015 * (max(gaps) - min(gaps) or 1) if gaps else 0
        for i, group in enumerate(groups):
            points = group.get("pairs") or []
            x = [p["gap"] + dodge * (i - (len(groups) - 1) / 2) for p in points]
            y = [p["share"] for p in points]
            # Clipped at 0: at a share of 0 or 1 a Wilson bound can miss it by rounding.
            errors = [
                [max(0.0, v - p["share_ci"][0]) for v, p in zip(y, points, strict=True)],
                [max(0.0, p["share_ci"][1] - v) for v, p in zip(y, points, strict=True)],
            ]
            ax.errorbar(
                x,
                y,
                yerr=errors,
                marker="o",
                capsize=3,
                alpha=0.8,
                label=f"{group['group']} ({group['n_raters']})",
            )
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sparsity gap of the condition pair", fontsize=8)
        ax.set_ylabel("sparser output preferred", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="group (raters)", title_fontsize=7)
    for ax in list(axes.flat)[len(groupings) :]:
        ax.axis("off")
    figure.tight_layout()
    return _png(figure)
