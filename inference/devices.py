"""Which device settings go together, the one rule for the CLI, the worker and the Django
settings (no torch here, so settings can check it at start).

A model runs whole on one device, or split by a hot/cold placement with its hot neurons on
one device and its cold ones on another; never both, and never the two split devices
without a split."""

from __future__ import annotations

from typing import NamedTuple


class DeviceNames(NamedTuple):
    """What the caller's user calls the three settings, for the message."""

    device: str
    split: str
    split_devices: str


def device_misuse(
    *, device: str, split: bool, hot_device: str, cold_device: str, names: DeviceNames
) -> str | None:
    """Why these settings cannot place a model, in the caller's own names; None if they can."""
    if split and str(device) != "cpu":
        return (f"a hot/cold split ({names.split}) places the model itself: "
                f"set {names.split_devices}, not {names.device}")
    if not split and (str(hot_device), str(cold_device)) != ("cpu", "cpu"):
        return f"{names.split_devices} need {names.split}"
    return None
