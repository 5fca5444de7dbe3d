# Installs, in dependency order: metrics-server (for the HPA), kube-prometheus-stack (Prometheus
# Operator CRDs, Prometheus, Grafana with its dashboard sidecar), KEDA when autoscaling_signal is
# "load", then load-shed-api from the chart in this repository.

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

# KEDA: the ScaledObject of autoscaling.signal = "load" (an HPA on the service's own load signal,
# queried from kube-prometheus-stack's Prometheus). Only installed when that signal is chosen.
resource "helm_release" "keda" {
  count            = var.autoscaling_signal == "load" ? 1 : 0
  name             = "keda"
  repository       = "https://kedacore.github.io/charts"
  chart            = "keda"
  version          = var.keda_chart_version
  namespace        = "keda"
  create_namespace = true
  wait             = true
  timeout          = 300
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
      autoscaling = {
        signal = var.autoscaling_signal
        load = {
          serverAddress = "http://kube-prometheus-stack-prometheus.${var.monitoring_namespace}.svc:9090"
        }
      }
    }),
    yamlencode(var.app_values),
  ]

  # The ServiceMonitor and PrometheusRule need the operator's CRDs; the HPA needs metrics-server;
  # the ScaledObject needs KEDA's API (the chart refuses to install without it).
  depends_on = [helm_release.kube_prometheus_stack, helm_release.metrics_server, helm_release.keda]
}
