variable "bucket_name" {
  description = "Name of the artifact bucket (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "artifacts_prefix" {
  description = "Key prefix for squeezeflow's content-addressed objects and stage records (SQUEEZEFLOW_ARTIFACTS = s3://<bucket>/<prefix>)."
  type        = string
  default     = "squeezeflow"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+$", var.artifacts_prefix))
    error_message = "artifacts_prefix must be one path segment without slashes."
  }
}

variable "mlflow_prefix" {
  description = "Key prefix for the MLflow server's artifact store (--artifacts-destination s3://<bucket>/<prefix>)."
  type        = string
  default     = "mlflow"
}

variable "input_prefixes" {
  description = "Key prefixes in the bucket the pipelines may read models and datasets from."
  type        = list(string)
  default     = ["models", "datasets"]
}

variable "failed_candidate_retention_days" {
  description = "Days after which objects tagged squeezeflow-status=failed (candidates not built, failed the gate or skipped as slower, and their records) expire."
  type        = number
  default     = 30

  validation {
    condition     = var.failed_candidate_retention_days >= 1
    error_message = "failed_candidate_retention_days must be at least 1."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version is kept before it expires."
  type        = number
  default     = 90
}

variable "access_log_bucket" {
  description = "Existing bucket that receives S3 server access logs; empty disables access logging."
  type        = string
  default     = ""
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (EKS: aws_iam_openid_connect_provider); empty skips the IRSA roles."
  type        = string
  default     = ""
}

variable "oidc_provider_url" {
  description = "Issuer URL of the cluster's OIDC provider without https:// (e.g. oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE)."
  type        = string
  default     = ""
}

variable "runner_service_accounts" {
  description = "namespace:name of the Kubernetes service accounts that run pipeline steps: the chart's runner (<release>-squeezeflow-runner, or <release>-runner when the release name contains \"squeezeflow\"; helm_values passes the first entry's name to the chart) and Airflow's workers."
  type        = list(string)
  default     = ["squeezeflow:squeezeflow-runner", "airflow:airflow-worker"]
}

variable "mlflow_service_account" {
  description = "namespace:name of the MLflow server's service account (the chart's <release>-squeezeflow-mlflow, or <release>-mlflow; helm_values passes the name to the chart)."
  type        = string
  default     = "squeezeflow:squeezeflow-mlflow"
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = { "app.kubernetes.io/part-of" = "squeezeflow" }
}
