"""A custom operator shipped in plugins.zip, used by the scenario's DAGs."""

from airflow.sdk import BaseOperator


class RomanYearOperator(BaseOperator):
    """Returns the year in Roman numerals, with the roman package from requirements.txt."""

    def __init__(self, year: int, **kwargs):
        super().__init__(**kwargs)
        self.year = year

    def execute(self, context):
        import roman

        return f"{self.task_id}: {roman.toRoman(self.year)}"
