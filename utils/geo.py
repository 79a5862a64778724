"""Places and local time, shared by the simulator and the rules. Pure; the only data read is the
IANA time-zone database shipped by the pinned `tzdata` package (read once, at first use).

Local time has two sources here:
* civil time, from a country's IANA zones (`country_zones`, `zone_hour`): what people live by, and
  the only option for a card-not-present payment, which carries a country but no coordinates;
* solar time from a longitude (`solar_hour`): UTC + longitude / 15 h, within an hour or two of
  civil time, for countries whose zones disagree (the US spans six hours).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from types import MappingProxyType
from zoneinfo import ZoneInfo

__all__ = [
    "EARTH_RADIUS_KM",
    "country_zones",
    "haversine_km",
    "solar_hour",
    "zone_hour",
]

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a spherical Earth (error < 0.5%, plenty for a speed limit)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2.0) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2.0) ** 2
    # min() guards asin against a rounding excursion just above 1 for antipodal points.
    return 2.0 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def solar_hour(epoch: float, longitude: float) -> float:
    """Solar local hour in [0, 24): the UTC hour shifted by longitude / 15."""
    return ((epoch % 86400.0) / 3600.0 + longitude / 15.0) % 24.0


@cache
def _zone(key: str) -> ZoneInfo:
    # From the pinned package, not the system's /usr/share/zoneinfo that ZoneInfo(key) prefers:
    # the zone table and the zones' rules then come from one tzdb release.
    path = resources.files("tzdata").joinpath("zoneinfo", *key.split("/"))
    with path.open("rb") as f:
        return ZoneInfo.from_file(f, key=key)


def zone_hour(epoch: float, zone: str) -> float:
    """Civil local hour in [0, 24) in IANA zone `zone` (daylight saving time included)."""
    offset = _zone(zone).utcoffset(datetime.fromtimestamp(epoch, UTC))
    seconds = offset.total_seconds() if offset is not None else 0.0
    return ((epoch + seconds) % 86400.0) / 3600.0


@cache
def _country_zones() -> Mapping[str, tuple[str, ...]]:
    # zone1970.tab: "CC[,CC...]<TAB>coordinates<TAB>Zone/Name[<TAB>comment]", one row per zone
    # whose clocks have agreed since 1970; a zone shared by several countries lists them all.
    text = resources.files("tzdata").joinpath("zoneinfo", "zone1970.tab").read_text(encoding="utf-8")
    zones: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        codes, _coords, zone = line.split("\t")[:3]
        for code in codes.split(","):
            zones.setdefault(code, []).append(zone)
    return MappingProxyType({code: tuple(z) for code, z in zones.items()})


def country_zones(country: str) -> tuple[str, ...]:
    """The IANA zones in use in ISO 3166 country `country` (most populous first); () if unknown."""
    return _country_zones().get(country, ())
