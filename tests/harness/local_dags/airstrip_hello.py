"""The local environment's first DAG, synced from the emulated S3 bucket by every DAG host."""

from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="airstrip_hello", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["airstrip"])
def airstrip_hello():
    @task
    def hello():
        import socket

        return f"hello from {socket.gethostname()}"

    hello()


airstrip_hello()
