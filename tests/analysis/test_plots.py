"""The report's alignment figure: bytes in MB, one sparsity range on every panel."""

import base64

from analysis import plots


def test_bytes_are_drawn_in_megabytes_with_their_interval():
    (point,) = plots._scaled(
        [{"bytes_read_per_token": 5.38e8, "bytes_read_per_token_ci": [5.3e8, 5.4e8]}],
        "bytes_read_per_token",
    )
    assert point["bytes_read_per_token"] == 538.0
    assert point["bytes_read_per_token_ci"] == [530.0, 540.0]
    assert dict(plots.CURVES)["bytes_read_per_token"] == "Weight MB read / token"


def test_every_panel_shares_the_sparsity_range(monkeypatch):
    limits = []
    real_png = plots._png

    def recording_png(figure):
        limits.extend(ax.get_xlim() for ax in figure.axes if ax.axison)
        return real_png(figure)

    monkeypatch.setattr(plots, "_png", recording_png)
    rows = [
        {"condition": "dense", "family": "dense", "series": "dense", "sparsity": 0.0,
         "tokens_per_s": 30.0, "bytes_read_per_token": 5.38e8},
        {"condition": "s50", "family": "static", "series": "static", "sparsity": 0.5,
         "win_rate_vs_dense": 0.4, "tokens_per_s": 33.0, "bytes_read_per_token": 4.9e8},
    ]
    png = base64.b64decode(plots.alignment_figure(rows))
    assert png.startswith(b"\x89PNG")
    assert len(limits) == len(plots.CURVES), limits
    assert len(set(limits)) == 1, f"panels differ in their sparsity range: {limits}"


def test_pareto_labels_never_overlap_and_a_share_keeps_its_0_to_1_axis(monkeypatch):
    """Points at one place share one label ("1, 2") and the legend names them; when every
    Pass@1 is 0 the axis is still 0 to 1, not ±0.04 with negative Pass@1 on it."""
    assert plots.pareto_labels([(10.0, 0.0), (10.1, 0.0), (20.0, 0.0), (10.0, 0.5)],
                               x_span=10.0, y_span=1.0) == [[0, 1], [2], [3]]
    seen = {}
    real_png = plots._png

    def recording_png(figure):
        (ax,) = figure.axes
        seen["ylim"] = ax.get_ylim()
        seen["labels"] = [t.get_text() for t in ax.texts]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        return real_png(figure)

    monkeypatch.setattr(plots, "_png", recording_png)
    rows = [{"condition": name, "tokens_per_s": tps, "pass_at_1": 0.0}
            for name, tps in (("dense", 30.0), ("static 25% @h", 30.2), ("static 50% @h", 40.0))]
    png = base64.b64decode(plots.pareto_figure(rows, ["static 50% @h"], "pass_at_1"))
    assert png.startswith(b"\x89PNG")
    assert seen["ylim"] == (-0.03, 1.03)
    assert seen["labels"] == ["1, 2", "3"]
    assert seen["legend"][:3] == ["1  dense", "2  static 25% @h", "3  static 50% @h (front)"]
