"""Where a job's files and records live.

* `artifacts`: the artifact store (a local folder or an S3 bucket): content-addressed objects and JSON
  records written atomically, the same API for both.
* `s3`: the S3 client (endpoint, credentials, retries) and its error messages.
"""
