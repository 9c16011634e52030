"""Model sources: what a job's model URI may point to, and how it is loaded and exported.

* `sources`: loading a PyTorch or ONNX model source and exporting it to ONNX.
* `exported_program`: the checks that make a ``.pt2`` archive safe to load (nothing in it can run code).

Running ONNX models (sessions, batched prediction) is `squeezeflow.runtime`; counting their cost is
`squeezeflow.onnx_cost`; resolving a ``package.module:callable`` a spec names is `squeezeflow.user_code`.
"""
