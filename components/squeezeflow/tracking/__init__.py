"""MLflow as the system of record: one parent run per job, one nested run and one LoggedModel per
candidate, and the model registry for promotion.

Every get-or-create here is keyed by content hashes stored as tags, so a stage that Airflow or
Kubeflow retries finds its earlier run, model or version instead of making a duplicate.

One module a job (import from the module; this package re-exports nothing):

- `client`: the connection (`TrackingClient`, bounded retries, unreachable server ->
  InfrastructureError), redacting a tracking URI's password, the embedded default URI.
- `runs`: the job's parent run and the candidates' nested runs; params, metrics, tags, artifacts.
- `models`: a candidate's ONNX file as an MLflow LoggedModel (`log_onnx_model`).
- `registry`: registered models, versions, their tags and descriptions, moving an alias.
- `aliases`: promotion bookkeeping: the alias contest, the alias history and rollback chain, rollback.
- `registry_tags`: the registry tag keys built from an alias and MLflow's length limits (imports no
  MLflow: the job spec validates with it).
- `lease`: one process at a time per job, a lease on the job's parent run.
- `tracker`: `Tracker`, every job above on one client: what the stages hold.
"""
