variable "kubeconfig_path" {
  description = "Path of the kubeconfig that reaches the cluster."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "kubeconfig context to use; `kind create cluster --name load-shed` creates kind-load-shed."
  type        = string
  default     = "kind-load-shed"
}

variable "monitoring_namespace" {
  description = "Namespace of kube-prometheus-stack (Prometheus, Grafana, the operator)."
  type        = string
  default     = "monitoring"
}

variable "app_namespace" {
  description = "Namespace of load-shed-api and its simulated upstream."
  type        = string
  default     = "load-shed"
}

variable "app_release_name" {
  description = "Helm release name of load-shed-api. The Prometheus job label stays load-shed-api whatever it is."
  type        = string
  default     = "load-shed-api"
}

variable "metrics_server_chart_version" {
  description = "Pinned version of the metrics-server chart (needed by the HPA)."
  type        = string
  default     = "3.13.0"
}

variable "kube_prometheus_stack_chart_version" {
  description = "Pinned version of the kube-prometheus-stack chart."
  type        = string
  default     = "85.1.2"
}

variable "autoscaling_signal" {
  description = "What scales the api: \"cpu\" (the chart's HPA, metrics-server) or \"load\" (KEDA on autoscaling_load_ratio; installs KEDA)."
  type        = string
  default     = "cpu"

  validation {
    condition     = contains(["cpu", "load"], var.autoscaling_signal)
    error_message = "autoscaling_signal must be \"cpu\" or \"load\"."
  }
}

variable "keda_chart_version" {
  description = "Pinned version of the KEDA chart (installed only with autoscaling_signal = \"load\")."
  type        = string
  default     = "2.21.1"
}

variable "metrics_server_insecure_tls" {
  description = "Pass --kubelet-insecure-tls to metrics-server: Kind's kubelets serve self-signed certificates."
  type        = bool
  default     = true
}

variable "image_repository" {
  description = "Repository of the load-shed-api image (for Kind: built locally and loaded with `kind load docker-image`)."
  type        = string
  default     = "load-shed-api"
}

variable "image_tag" {
  description = "Tag of the load-shed-api image."
  type        = string
  default     = "0.1.0"
}

variable "upstream_latency_ms" {
  description = "Latency of the simulated upstream when callers name none (chart value config.upstream.latencyMs)."
  type        = number
  default     = 50
}

variable "upstream_fail_rate" {
  description = "Failure probability of the simulated upstream when callers name none, 0-1 (config.upstream.failRate)."
  type        = number
  default     = 0

  validation {
    condition     = var.upstream_fail_rate >= 0 && var.upstream_fail_rate <= 1
    error_message = "upstream_fail_rate must be between 0 and 1."
  }
}

variable "app_values" {
  description = "Further values for the load-shed-api chart, merged over the ones above (see helm/load-shed-api/values.yaml)."
  type        = any
  default     = {}
}
