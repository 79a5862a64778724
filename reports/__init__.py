"""What the Airflow DAGs run: the daily report, the health checks and retention.

Plain functions over the database and the brokers, tested without Airflow; `dags/` only
schedules them. The daily report, in the order a run goes through it:

    day.py            which UTC day a run covers, and its bounds
    completeness.py   whether every partition stored past the day's end (the scheduled run waits)
    queries.py        the day's SQL: summary (amounts in the base currency), rule quality, the report's figures
    reconciliation.py the day's offsets per partition, their gaps and restarts (SQL)
    offsets.py        pure arithmetic of reconciliation: runs of offsets, gaps, restarts
    scoring.py        pure arithmetic of rules: a day's incident-level figures (utils/rule_quality), noisy rules
    figures.py        the plain data all of them pass around
    charts.py         matplotlib charts as inline SVG
    page.py           the HTML page, rendered from templates/report.html.j2
    files.py          report.html, summary.csv, alerts.csv, figures.json, written atomically
    __main__.py       `python -m reports --day D`: all of it for one day, without Airflow

Monitoring and retention:

    health.py     Kafka (topics, lag) and PostgreSQL checks
    zookeeper.py  ZooKeeper's four-letter words and their metrics
    metrics.py    pipeline metrics, recording them, the limits that turn a run red
    retention.py  deleting what is older than RETENTION_DAYS (also `python -m reports.retention`)

What a person sees of it in Airflow:

    runs.py       the texts of a run's note (why it is red, the day it reported), in units.py's terms
    units.py      durations, counts and shares as a person reads them
"""
