"""Isolate Airflow before any DAG test module imports it."""

from tests.dags.isolation import isolate_airflow

isolate_airflow()
