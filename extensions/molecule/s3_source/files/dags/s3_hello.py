from datetime import datetime

from airflow.sdk import dag

from airstrip_demo.operators import RomanYearOperator


@dag(dag_id="s3_hello", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def s3_hello():
    RomanYearOperator(task_id="year", year=2026)


s3_hello()
