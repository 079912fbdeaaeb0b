"""Tests of sidecar identity: the resource server, token verifiers, mapping."""
