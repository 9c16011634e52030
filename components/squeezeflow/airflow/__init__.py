"""The Airflow provider: ``pip install squeezeflow[airflow]``.

* `hooks`: the MLflow connection type and the hook that turns Airflow connections (MLflow, AWS) into the
  settings a stage needs, without putting credentials in DAG code, XCom or logs.
* `operators`: one operator per stage, thin over `squeezeflow.tasks`, passing only small JSON records.
* `triggers`: a deferrable wait for a record in the artifact store (a remote device agent's benchmark).
* `factory`: DAGs from job specs (one YAML spec per model becomes one DAG).
"""
