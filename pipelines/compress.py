"""The generic compress pipeline (compiled next to this file as compress.yaml).

    python pipelines/compress.py            # rewrite pipelines/compress.yaml

Upload compress.yaml in the Kubeflow UI and paste a job spec into its `spec` parameter, or stamp a
per-model pipeline with the form prefilled from a spec: `squeezeflow kfp compile SPEC.yaml -o out.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from squeezeflow.kfp.pipelines import build_compress, compile_pipeline

HERE = Path(__file__).resolve().parent
OUT = HERE / "compress.yaml"

compress = build_compress()

if __name__ == "__main__":
    print(compile_pipeline(compress, OUT))
