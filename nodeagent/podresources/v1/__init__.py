"""Generated stubs of proto/k8s/podresources/v1/api.proto; never edited by hand."""
