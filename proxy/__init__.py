"""kubelab node proxy: userspace kube-proxy, cluster DNS and ingress, one process per worker."""
