"""Vendored kubelet PodResources v1 API (generated; see generate.sh)."""
