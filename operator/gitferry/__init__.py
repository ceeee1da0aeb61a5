"""gitferry: a Kubernetes GitOps operator."""
