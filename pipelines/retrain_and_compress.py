"""The retrain-and-compress pipeline (compiled next to this file as retrain_and_compress.yaml).

    python pipelines/retrain_and_compress.py    # rewrite pipelines/retrain_and_compress.yaml

An optional first step calls your training entry point (`train_entrypoint`, `module:callable`, see
squeezeflow.kfp.retrain) to write a new state_dict; the compression then runs on it. With an empty
`train_entrypoint` the step is skipped and the spec's model is compressed as it is.
"""

from __future__ import annotations

from pathlib import Path

from squeezeflow.kfp.pipelines import build_retrain_and_compress, compile_pipeline

HERE = Path(__file__).resolve().parent
OUT = HERE / "retrain_and_compress.yaml"

retrain_and_compress = build_retrain_and_compress()

if __name__ == "__main__":
    print(compile_pipeline(retrain_and_compress, OUT))
