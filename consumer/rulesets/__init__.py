"""Rule sets as versioned data: which rules run, at what severity, with which parameters.

    model.py      the rule set as plain data, derived from `RuleThresholds` and `rules.RULES` (pure)
    document.py   YAML in and out; validation that names the line and the fix (pure)
    store.py      immutable versions and the active one in PostgreSQL; rule_set_applied
    active.py     a version ready to run (ActiveRules) and where partitions switched (pure)
    reload.py     running consumers follow the active version between batches
    __main__.py   `python -m consumer.rulesets show|validate|publish|history|activate`

Until someone publishes a version, the active rule set is the environment's (the ALERT_*
settings): nothing changes for users who never touch this. The first `publish` stores that
environment set as version 1, so `activate 1` always returns to what ran before.
"""
