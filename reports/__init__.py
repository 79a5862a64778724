"""What the Airflow DAGs run: the daily report, the health checks and retention.

Plain functions over the database and the brokers, tested without Airflow; `dags/` only
schedules them. The daily report, in the order a run goes through it:

    day.py        which UTC day a run covers, and its bounds
    queries.py    the day's SQL: summary, rule quality, reconciliation, the report's figures
    scoring.py    pure arithmetic: precision/recall per rule, offset gaps
    figures.py    the plain data all of them pass around
    charts.py     matplotlib charts as embedded PNGs
    page.py       the HTML page, rendered from templates/report.html.j2
    files.py      report.html, summary.csv, alerts.csv, figures.json, written atomically

Monitoring and retention:

    health.py     Kafka (topics, lag) and PostgreSQL checks
    zookeeper.py  ZooKeeper's four-letter words and their metrics
    metrics.py    pipeline metrics, recording them, the limits that turn a run red
    retention.py  deleting what is older than RETENTION_DAYS (also `python -m reports.retention`)
"""
