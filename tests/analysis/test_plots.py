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
