"""What the Airflow DAGs run: the daily report, the health checks and retention.

Plain functions over the database and the brokers, tested without Airflow; `dags/` only
schedules them.
"""
