import pytest

from inference.devices import DeviceNames, device_misuse

NAMES = DeviceNames("--device", "--plan", "--hot-device/--cold-device")


@pytest.mark.parametrize(("device", "split", "hot", "cold"), [
    ("cpu", False, "cpu", "cpu"),     # whole, on the CPU
    ("cuda:1", False, "cpu", "cpu"),  # whole, on a GPU
    ("cpu", True, "cuda", "cpu"),     # split: hot neurons on the GPU
    ("cpu", True, "cpu", "cpu"),      # split, both halves on the CPU (tests, benchmarks)
])
def test_settings_that_place_a_model_pass(device, split, hot, cold):
    assert device_misuse(device=device, split=split, hot_device=hot, cold_device=cold,
                         names=NAMES) is None


def test_a_split_with_a_whole_model_device_is_refused_in_the_callers_names():
    message = device_misuse(device="cuda", split=True, hot_device="cuda", cold_device="cpu",
                            names=NAMES)
    assert message == ("a hot/cold split (--plan) places the model itself: "
                       "set --hot-device/--cold-device, not --device")


@pytest.mark.parametrize(("hot", "cold"), [("cuda", "cpu"), ("cpu", "cuda:1")])
def test_split_devices_without_a_split_are_refused(hot, cold):
    message = device_misuse(device="cpu", split=False, hot_device=hot, cold_device=cold,
                            names=NAMES)
    assert message == "--hot-device/--cold-device need --plan"
