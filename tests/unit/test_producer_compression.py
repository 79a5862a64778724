"""PRODUCER_COMPRESSION: the codecs offered, and that each one's wheel is installed (kafka-python's
KafkaProducer refuses a codec whose library is missing, and a consumer cannot read its batches)."""

from __future__ import annotations

import pytest
from kafka import codec

from utils.config import PRODUCER_COMPRESSIONS, load_settings
from utils.errors import ConfigError


def test_lz4_is_the_default() -> None:
    assert load_settings(environ={}).producer.compression == "lz4"


@pytest.mark.parametrize("value", PRODUCER_COMPRESSIONS)
def test_offered_codecs_are_accepted(value: str) -> None:
    assert load_settings(environ={"PRODUCER_COMPRESSION": value}).producer.compression == value


@pytest.mark.parametrize("value", ["gzip", "snappy", "zstd", "LZ4", "", "None"])
def test_other_values_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="PRODUCER_COMPRESSION"):
        load_settings(environ={"PRODUCER_COMPRESSION": value})


@pytest.mark.parametrize("value", [c for c in PRODUCER_COMPRESSIONS if c != "none"])
def test_every_offered_codec_is_installed(value: str) -> None:
    assert getattr(codec, f"has_{value}")(), f"{value} offered but its library is not installed"
