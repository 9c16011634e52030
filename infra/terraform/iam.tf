# Least-privilege access for the pipelines (the runner and Airflow's workers) and the MLflow server,
# assumed through IRSA (EKS IAM roles for service accounts). Without an OIDC provider the policies are
# still created, so they can be attached to another principal.

locals {
  irsa            = var.oidc_provider_arn != "" && var.oidc_provider_url != ""
  artifacts_keys  = "${local.bucket_arn}/${var.artifacts_prefix}/*"
  mlflow_keys     = "${local.bucket_arn}/${var.mlflow_prefix}/*"
  input_keys      = [for p in var.input_prefixes : "${local.bucket_arn}/${p}/*"]
  runner_subjects = [for sa in var.runner_service_accounts : "system:serviceaccount:${sa}"]
}

data "aws_iam_policy_document" "pipelines" {
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = concat(
        [var.artifacts_prefix, "${var.artifacts_prefix}/*"],
        flatten([for p in var.input_prefixes : [p, "${p}/*"]]),
      )
    }
  }

  statement {
    sid       = "ReadInputs"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = concat(local.input_keys, [local.artifacts_keys])
  }

  # Content-addressed objects and stage records; the gate tags failed candidates for expiry.
  statement {
    sid = "WriteArtifacts"
    actions = [
      "s3:PutObject",
      "s3:PutObjectTagging",
      "s3:GetObjectTagging",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.artifacts_keys]
  }

  statement {
    sid       = "UseArtifactKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.artifacts.arn]
  }
}

data "aws_iam_policy_document" "mlflow" {
  statement {
    sid       = "ListMlflowPrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.mlflow_prefix, "${var.mlflow_prefix}/*"]
    }
  }

  statement {
    sid = "ReadWriteMlflowArtifacts"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.mlflow_keys]
  }

  statement {
    sid       = "UseArtifactKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.artifacts.arn]
  }
}

resource "aws_iam_policy" "pipelines" {
  name        = "${var.bucket_name}-pipelines"
  description = "squeezeflow pipelines: read inputs, write artifacts under ${var.artifacts_prefix}/"
  policy      = data.aws_iam_policy_document.pipelines.json
  tags        = var.tags
}

resource "aws_iam_policy" "mlflow" {
  name        = "${var.bucket_name}-mlflow"
  description = "squeezeflow MLflow server: its artifact store under ${var.mlflow_prefix}/"
  policy      = data.aws_iam_policy_document.mlflow.json
  tags        = var.tags
}

data "aws_iam_policy_document" "assume_runner" {
  count = local.irsa ? 1 : 0
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:sub"
      values   = local.runner_subjects
    }
  }
}

data "aws_iam_policy_document" "assume_mlflow" {
  count = local.irsa ? 1 : 0
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:sub"
      values   = ["system:serviceaccount:${var.mlflow_service_account}"]
    }
  }
}

resource "aws_iam_role" "pipelines" {
  count                = local.irsa ? 1 : 0
  name                 = "${var.bucket_name}-pipelines"
  assume_role_policy   = data.aws_iam_policy_document.assume_runner[0].json
  max_session_duration = 43200
  tags                 = var.tags
}

resource "aws_iam_role_policy_attachment" "pipelines" {
  count      = local.irsa ? 1 : 0
  role       = aws_iam_role.pipelines[0].name
  policy_arn = aws_iam_policy.pipelines.arn
}

resource "aws_iam_role" "mlflow" {
  count              = local.irsa ? 1 : 0
  name               = "${var.bucket_name}-mlflow"
  assume_role_policy = data.aws_iam_policy_document.assume_mlflow[0].json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "mlflow" {
  count      = local.irsa ? 1 : 0
  role       = aws_iam_role.mlflow[0].name
  policy_arn = aws_iam_policy.mlflow.arn
}
