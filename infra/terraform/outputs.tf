output "bucket_name" {
  description = "The artifact bucket."
  value       = aws_s3_bucket.artifacts.id
}

output "bucket_arn" {
  description = "ARN of the artifact bucket."
  value       = aws_s3_bucket.artifacts.arn
}

output "region" {
  description = "Region of the bucket (the chart's mlflow.artifacts.region)."
  value       = data.aws_region.current.name
}

output "kms_key_arn" {
  description = "The KMS key that encrypts the bucket."
  value       = aws_kms_key.artifacts.arn
}

output "squeezeflow_artifacts_uri" {
  description = "SQUEEZEFLOW_ARTIFACTS for the squeezeflow-env Secret and the Airflow Variable."
  value       = "s3://${aws_s3_bucket.artifacts.id}/${var.artifacts_prefix}"
}

output "mlflow_artifacts_uri" {
  description = "The chart's mlflow.artifacts.destination."
  value       = "s3://${aws_s3_bucket.artifacts.id}/${var.mlflow_prefix}"
}

output "pipelines_role_arn" {
  description = "IRSA role for the runner (runner.serviceAccount.annotations) and Airflow's workers; null without an OIDC provider."
  value       = local.irsa ? aws_iam_role.pipelines[0].arn : null
}

output "mlflow_role_arn" {
  description = "IRSA role for the MLflow server (mlflow.serviceAccount.annotations); null without an OIDC provider."
  value       = local.irsa ? aws_iam_role.mlflow[0].arn : null
}

output "pipelines_policy_arn" {
  description = "The pipelines' policy, to attach to another principal when IRSA is not used."
  value       = aws_iam_policy.pipelines.arn
}

# `terraform output -raw helm_values > tf-values.yaml; helm install ... -f tf-values.yaml`
output "helm_values" {
  description = "Values for charts/squeezeflow derived from this stack (YAML)."
  value = yamlencode({
    mlflow = {
      artifacts = {
        destination = "s3://${aws_s3_bucket.artifacts.id}/${var.mlflow_prefix}"
        region      = data.aws_region.current.name
      }
      serviceAccount = {
        name        = split(":", var.mlflow_service_account)[1]
        annotations = local.irsa ? { "eks.amazonaws.com/role-arn" = aws_iam_role.mlflow[0].arn } : {}
      }
    }
    runner = {
      serviceAccount = {
        name        = split(":", var.runner_service_accounts[0])[1]
        annotations = local.irsa ? { "eks.amazonaws.com/role-arn" = aws_iam_role.pipelines[0].arn } : {}
      }
    }
  })
}
