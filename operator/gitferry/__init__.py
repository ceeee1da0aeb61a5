"""gitferry: a Kubernetes GitOps operator."""

__version__ = "0.1.0"
