"""The job spec: the one contract every front door (CLI, Airflow, Kubeflow) validates at the edge."""
