"""The job spec: the one contract every front door (CLI, Airflow, Kubeflow) validates at the edge.

A spec is YAML (or JSON) that names the model, the data, the metric and tolerance, the target device
profiles, the search budget and the registry target. Import each name from the module that holds it:

* ``job``: `JobSpec` and the model, data and task sections (`ModelSource`, `DataSource`, `TaskSpec`);
* ``gate``: `Tolerance` and the robustness guard (`RobustnessCheck`);
* ``devices``: `DeviceProfile`, `DeviceBudgets` and the shipped profile library (`profile_library`);
* ``search``: `SearchSpec`, `SearchSpace`, early abandonment (`AbandonSpec`) and recipes (`Recipe`,
  `PassStep`);
* ``training``: `TrainingSpec` (where recovery training runs: device, precision, determinism);
* ``registry``: `RegistryTarget`;
* ``base``: what every section shares (`StrictModel`, `NAME_PATTERN`);
* ``load``: `load_spec` and `parse_spec` (validate once, errors that name the field), `spec_folder`,
  `check_local_inputs`, and `spec_json_schema` (the JSON Schema for UIs and platform templates);
* ``document``: reading a spec's YAML text strictly (duplicate keys, alias bombs, size) before validation;
* ``run_form``: the spec fields a person may change when starting a run (Airflow params, Kubeflow
  pipeline parameters), read from the spec's own JSON Schema.
"""
