"""The Compose design's services run natively, for development, tests, the demo and the bench.

    python -m stack up       # start what is missing, wait until ready, print `export` lines
    python -m stack env      # print the `export` lines again
    python -m stack status
    python -m stack down     # stop what this stack started (data is kept; --purge drops it)

    common.py        ports, addresses, detached processes and pidfiles, file locks, probes
    apache_kafka.py  Kafka's jars (Maven), ZooKeeper, the broker (ZooKeeper mode)
    tansu.py         the fallback broker where Kafka's jars cannot be had
    postgres.py      PostgreSQL binaries, initdb, start/stop, the roles (from utils/roles.py)
    orchestrator.py  LocalStack: the state dir, which components are ours, up/down/status/env
    __main__.py      the CLI above (`make stack-up`, `stack-down`, `stack-status`)
    demo.py          `make demo`: the whole pipeline on this stack

Dev tooling only: it may import the pipeline's packages; nothing in producer/, consumer/, utils/
or reports/ imports it (tests/unit/test_layering.py checks).
"""
