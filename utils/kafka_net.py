"""kafka-python's network client, with its slow-step warning where it means something here.

kafka-python 3 warns when one step of its event loop takes over 0.1 s ("It is blocking the event
loop -- likely a tight sync loop inside a coroutine"). A consumer catching up on a backlog
decodes multi-megabyte fetch responses while its main thread holds the GIL for validation and
the rules, so such steps of 0.1-0.2 s are routine: a 10,000,000-row run logged 109 of them, none
a fault. A step of a second or more still is worth a warning (heartbeats wait behind it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SLOW_STEP_WARNING_S", "net_client"]

SLOW_STEP_WARNING_S = 1.0


def net_client(**configs: Any) -> Any:
    """A `kafka_client` factory for KafkaConsumer, KafkaProducer and KafkaAdminClient."""
    from kafka.net.compat import KafkaNetClient  # imported here: utils.config stays free of kafka

    return KafkaNetClient(**{**configs, "slow_task_threshold_secs": SLOW_STEP_WARNING_S})
