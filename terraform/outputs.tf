output "port_forward_commands" {
  description = "Run each in its own terminal (or append &)."
  value = [
    "kubectl -n ${var.app_namespace} port-forward svc/${var.app_release_name} 8080:80",
    "kubectl -n ${var.monitoring_namespace} port-forward svc/kube-prometheus-stack-prometheus 9090:9090",
    "kubectl -n ${var.monitoring_namespace} port-forward svc/kube-prometheus-stack-grafana 3000:80",
  ]
}

output "grafana_password_command" {
  description = "Prints the Grafana admin password (user: admin)."
  value       = "kubectl -n ${var.monitoring_namespace} get secret kube-prometheus-stack-grafana -o jsonpath='{.data.admin-password}' | base64 -d; echo"
}

output "grafana_dashboard_url" {
  description = "The load-shed-api dashboard, once Grafana is port-forwarded."
  value       = "http://localhost:3000/d/load-shed-api"
}
