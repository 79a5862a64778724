"""utils.geo: distances, solar and civil local time, a country's zones from the pinned tzdata."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from utils.geo import country_zones, haversine_km, solar_hour, zone_hour

NEW_YORK = (40.7128, -74.0060)
LONDON = (51.5074, -0.1278)


def _at(month: int, hh: int, mm: int = 0) -> float:
    return datetime(2026, month, 15, hh, mm, tzinfo=UTC).timestamp()


def test_haversine_known_distances() -> None:
    assert haversine_km(*NEW_YORK, *LONDON) == pytest.approx(5_570, abs=10)
    assert haversine_km(*NEW_YORK, *NEW_YORK) == 0.0
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(20_015, abs=5)  # antipodal


def test_solar_hour() -> None:
    assert solar_hour(_at(1, 10, 30), 0.0) == 10.5
    assert solar_hour(_at(1, 10), -120.0) == 2.0
    assert solar_hour(_at(1, 0), -15.0) == 23.0


def test_zone_hour_follows_daylight_saving_time() -> None:
    assert zone_hour(_at(1, 12), "Europe/Madrid") == 13.0
    assert zone_hour(_at(7, 12), "Europe/Madrid") == 14.0
    assert zone_hour(_at(7, 1, 30), "America/New_York") == 21.5
    assert zone_hour(_at(1, 20), "Asia/Tokyo") == 5.0
    assert zone_hour(_at(1, 12), "Asia/Kolkata") == 17.5


def test_country_zones() -> None:
    assert country_zones("JP") == ("Asia/Tokyo",)
    assert country_zones("DK") == ("Europe/Berlin",)  # a zone shared since 1970 with Germany
    assert country_zones("US")[0] == "America/New_York" and len(country_zones("US")) > 20
    assert "Atlantic/Canary" in country_zones("ES")
    assert country_zones("ZZ") == ()
