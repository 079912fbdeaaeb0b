"""Generated protobuf and gRPC stubs (scripts/gen-proto). Never edit by hand."""
