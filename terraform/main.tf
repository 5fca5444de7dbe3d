# Installs, in dependency order: metrics-server (for the HPA), kube-prometheus-stack (Prometheus
# Operator CRDs, Prometheus, Grafana with its dashboard sidecar), then load-shed-api from the
# chart in this repository.

resource "kubernetes_namespace_v1" "monitoring" {
  metadata {
    name = var.monitoring_namespace
  }
}

resource "kubernetes_namespace_v1" "app" {
  metadata {
    name = var.app_namespace
  }
}

resource "helm_release" "metrics_server" {
  name       = "metrics-server"
  repository = "https://kubernetes-sigs.github.io/metrics-server/"
  chart      = "metrics-server"
  version    = var.metrics_server_chart_version
  namespace  = "kube-system"
  wait       = true
  timeout    = 300

  values = [yamlencode({
    args = var.metrics_server_insecure_tls ? ["--kubelet-insecure-tls"] : []
  })]
}

resource "helm_release" "kube_prometheus_stack" {
  name       = "kube-prometheus-stack"
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "kube-prometheus-stack"
  version    = var.kube_prometheus_stack_chart_version
  namespace  = kubernetes_namespace_v1.monitoring.metadata[0].name
  wait       = true
  timeout    = 900

  values = [yamlencode({
    grafana = {
      sidecar = {
        dashboards = {
          enabled    = true
          label      = "grafana_dashboard"
          labelValue = "1"
          # The dashboard ConfigMap lives in the app's namespace.
          searchNamespace = "ALL"
        }
      }
    }
    prometheus = {
      prometheusSpec = {
        # Select ServiceMonitors and rules from every namespace, not only this release's.
        serviceMonitorSelectorNilUsesHelmValues = false
        ruleSelectorNilUsesHelmValues           = false
        scrapeInterval                          = "15s"
      }
    }
  })]
}

resource "helm_release" "load_shed_api" {
  name      = var.app_release_name
  chart     = "${path.module}/../helm/load-shed-api"
  namespace = kubernetes_namespace_v1.app.metadata[0].name
  wait      = true
  timeout   = 300

  values = [
    yamlencode({
      image = {
        repository = var.image_repository
        tag        = var.image_tag
        pullPolicy = "IfNotPresent"
      }
      config = {
        upstream = {
          latencyMs = var.upstream_latency_ms
          failRate  = var.upstream_fail_rate
        }
      }
    }),
    yamlencode(var.app_values),
  ]

  # The ServiceMonitor and PrometheusRule need the operator's CRDs; the HPA needs metrics-server.
  depends_on = [helm_release.kube_prometheus_stack, helm_release.metrics_server]
}
