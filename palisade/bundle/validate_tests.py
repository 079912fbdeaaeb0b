"""Reading ``spec.tests``: example calls, or GPU usage, with what the bundle must answer.

Part of the validator (:mod:`palisade.bundle.validate`); the same
:class:`~palisade.bundle.checker.Checker` collects the issues.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from palisade.bundle.checker import Checker, typename
from palisade.bundle.codes import Code
from palisade.bundle.schema import BundleTest, GpuUsage, TestCall, TestExpect
from palisade.bundle.yamlpos import Path
from palisade.policy.types import Decision, Risk

_VIOLATION = re.compile(r"^(gpus|gpuMemoryBytes|powerWatts|allocatedDevicesOnly|migInstances/.+)$")


def _gpu_test(c: Checker, path: Path, d: Mapping[str, Any]) -> BundleTest | None:
    gp, ep = (*path, "gpu"), (*path, "expect")
    gpu_d = c.obj(
        d["gpu"],
        gp,
        ["tenant"],
        ["gpus", "gpuMemoryBytes", "migInstances", "powerWatts", "unallocatedDevices"],
    )
    expect_d = c.obj(d.get("expect"), ep, ["violations"], [])
    if gpu_d is None or expect_d is None:
        return None
    mig: dict[str, int] = {}
    raw_mig = gpu_d.get("migInstances") or {}
    if not isinstance(raw_mig, dict):
        c.err(
            (*gp, "migInstances"),
            f"must be a mapping, got {typename(raw_mig)}",
            code=Code.WRONG_TYPE,
        )
    else:
        for profile in raw_mig:
            n = c.integer(raw_mig, profile, (*gp, "migInstances"), None)
            if n is not None:
                mig[profile] = n
    violations = c.strings(expect_d, "violations", ep)
    for i, v in enumerate(violations):
        if not _VIOLATION.match(v):
            c.err(
                (*ep, "violations", i),
                f"{v!r} is not a quota limit; use gpus, gpuMemoryBytes, powerWatts,"
                " allocatedDevicesOnly or migInstances/<profile>",
                code=Code.NOT_A_CHOICE,
            )
    for key in ("repeat", "everySeconds"):
        if key in d:
            c.err((*path, key), "applies to call tests only", code=Code.COMBINATION)
    return BundleTest(
        name=c.name(d, "name", path),
        call=None,
        gpu=GpuUsage(
            tenant=c.string(gpu_d, "tenant", gp),
            gpus=c.integer(gpu_d, "gpus", gp, 0) or 0,
            gpu_memory_bytes=c.integer(gpu_d, "gpuMemoryBytes", gp, 0) or 0,
            mig_instances=mig,
            power_watts=c.number(gpu_d, "powerWatts", gp, 0.0) or 0.0,
            unallocated_devices=c.integer(gpu_d, "unallocatedDevices", gp, 0) or 0,
        ),
        expect=TestExpect(violations=tuple(sorted(violations))),
    )


def read_test(c: Checker, path: Path, raw: Any) -> BundleTest | None:
    d = c.obj(raw, path, ["name", "expect"], ["call", "gpu", "repeat", "everySeconds"])
    if d is None:
        return None
    if ("call" in d) == ("gpu" in d):
        c.err(
            path,
            "needs exactly one of 'call' (a tool call to decide) or 'gpu' (a tenant's GPU"
            " usage to check against its quota)",
            code=Code.COMBINATION,
        )
        return None
    if "gpu" in d:
        return _gpu_test(c, path, d)
    cp = (*path, "call")
    call_d = c.obj(
        d.get("call"),
        cp,
        ["agent", "server", "tool"],
        [
            "arguments",
            "session",
            "onBehalfOf",
            "serverVersion",
            "labels",
            "serverDeclaredRisk",
        ],
    )
    ep = (*path, "expect")
    expect_d = c.obj(d.get("expect"), ep, ["decision"], ["rule", "reasonContains"])
    if call_d is None or expect_d is None:
        return None
    args = call_d.get("arguments", {})
    if not isinstance(args, dict):
        c.err((*cp, "arguments"), f"must be a mapping, got {typename(args)}", code=Code.WRONG_TYPE)
        args = {}
    else:
        try:
            json.dumps(args, allow_nan=False)
        except (TypeError, ValueError):
            c.err(
                (*cp, "arguments"),
                "must hold only JSON values (strings, numbers, booleans, null, lists, mappings);"
                " quote YAML dates and timestamps",
                code=Code.WRONG_TYPE,
            )
            args = {}
    declared = (
        c.enum_value(call_d["serverDeclaredRisk"], (*cp, "serverDeclaredRisk"), Risk)
        if "serverDeclaredRisk" in call_d
        else None
    )
    call = TestCall(
        agent=c.string(call_d, "agent", cp),
        server=c.string(call_d, "server", cp),
        tool=c.string(call_d, "tool", cp),
        arguments=args,
        session=c.string(call_d, "session", cp, "test-session"),
        on_behalf_of=c.string(call_d, "onBehalfOf", cp),
        server_version=c.string(call_d, "serverVersion", cp),
        labels=c.str_map(call_d, "labels", cp),
        server_declared_risk=declared,
    )
    expect = TestExpect(
        decision=c.enum(expect_d, "decision", ep, Decision, Decision.DENY),
        rule=c.string(expect_d, "rule", ep),
        reason_contains=c.string(expect_d, "reasonContains", ep),
    )
    return BundleTest(
        name=c.name(d, "name", path),
        call=call,
        expect=expect,
        repeat=c.integer(d, "repeat", path, 1, minimum=1) or 1,
        every_seconds=c.number(d, "everySeconds", path, 0.0) or 0.0,
    )
