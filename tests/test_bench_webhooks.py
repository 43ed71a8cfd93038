"""The webhooks benchmark's drop (bench/webhooks.py): each "on" phase against the "off"
phases beside it, so that the file growing between phases does not count as drop."""

import pytest

from bench.webhooks import phase_drops


def test_each_on_phase_is_compared_with_the_off_phases_beside_it() -> None:
    # Ingestion slows as the file grows: 2,000, 1,800, 1,600 events/s off. "On" phases
    # 10 % under the mean of their neighbours are a 10 % drop, not more.
    drops = phase_drops(["off", "on", "off", "on", "off"], [2000, 1710, 1800, 1530, 1600])
    assert drops == pytest.approx([0.10, 0.10])
    # At an end, the one neighbour there is.
    assert phase_drops(["on", "off"], [900, 1000]) == pytest.approx([0.10])


def test_an_on_phase_without_an_off_phase_beside_it_is_refused() -> None:
    with pytest.raises(ValueError, match="phase 3"):
        phase_drops(["off", "on", "on"], [1.0, 1.0, 1.0])
