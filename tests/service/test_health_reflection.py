"""The standard health service and server reflection answer on the same socket."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .conftest import Served


async def test_health_reports_serving_overall_and_for_the_policy_service(served: Served) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    for name in ("", "palisade.v1.PolicyService"):
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_policy_service_and_serves_its_file(served: Served) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)

    async def ask(
        request: reflection_pb2.ServerReflectionRequest,
    ) -> reflection_pb2.ServerReflectionResponse:
        call = stub.ServerReflectionInfo()
        await call.write(request)
        await call.done_writing()
        async for resp in call:
            return resp
        raise AssertionError("no reflection response")

    listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {"palisade.v1.PolicyService", "grpc.health.v1.Health"} <= names
    found = await ask(
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="palisade.v1.PolicyService")
    )
    assert found.file_descriptor_response.file_descriptor_proto
