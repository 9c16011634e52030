"""The search, the same in every front door.

::

    round 0: the cheap candidates (int8 variants of the baseline, or the spec's explicit recipes)
    round k: ask the study for `search.parallel_trials` recipes -> build, gate and measure each on its
             own (the candidate policy) -> tell the study what each gave -> round k+1 ...

* `rounds.plan_round` asks: it rebuilds the Optuna study from the trial records of earlier rounds and
  asks it for the next round's recipes, and records the plan.
* `policy` is the one rule for a candidate: build -> latency-first skip -> gate -> benchmark every
  profile -> record (the "tell"). The CLI runs a trial in process; Airflow runs its phases as mapped
  tasks over a round (`.expand`), Kubeflow inside `dsl.ParallelFor`; all call the same functions.
* `space` turns a trial's parameters into a recipe.

Study state lives in the artifact store as records (one per round's plan, one per finished trial), not in
an Optuna database: every worker that can read the artifact store can plan, the embedded default needs
no server, and a record keyed by job and round makes a retried plan task return the same plan (Optuna's
RDB storage would hand a retried `ask` a new trial). A plan is a pure function of the spec, its seed and
the recorded results of earlier rounds, and the study is told deterministic objectives (validation drop,
MACs, bytes), never a noisy latency, so the same spec and seed give the same recipes through every door.
Measured latency decides promotion, not the search.
"""
