"""Shared pytest set-up: registers the Kubernetes control-plane harness fixtures."""

pytest_plugins = ["tests.harness.plugin"]
