"""Reads a variable and a connection that live only in Secrets Manager (uploaded by the tests)."""

from datetime import datetime

from airflow.sdk import BaseHook, Variable, dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def sm_reader():
    @task
    def read():
        conn = BaseHook.get_connection("sm_http")
        return f"{Variable.get('sm_greeting')}|{conn.host}:{conn.port}|{conn.login}"

    read()


sm_reader()
