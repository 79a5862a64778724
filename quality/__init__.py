"""`python -m quality` (`make quality`): how good each alert rule is, measured end to end.

A seeded simulated stream goes through the real producer, Kafka, the real consumer and
PostgreSQL; then each rule is scored per incident against the simulator's ground truth
(utils/rule_quality.py). Dev tooling: nothing in the pipeline imports it.
"""
