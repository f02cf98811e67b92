"""``conformance/utils/grpc/grpc.go``, re-expressed: a GrpcEcho call through the gateway and the
comparison of its answer with what the test expects.

The client is grpcio (h2c, as the Go client's insecure credentials), a channel per expected
response with its ``:authority`` when one is set; the messages are the echo-basic proto's
(``grpcecho.proto``), declared below to the official protobuf runtime, which decodes the
answers (the played pods encode them by hand: gateway.devcluster.grpc_backend).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from roundtrip import TIMEOUTS, Timeouts, await_convergence, run_cases

ECHO_PACKAGE, ECHO_SERVICE = "gateway_api_conformance.echo_basic.grpcecho", "GrpcEcho"


def _echo_messages():
    """EchoRequest and EchoResponse of grpcecho.proto, for the protobuf runtime."""
    proto = descriptor_pb2.FileDescriptorProto(name="grpcecho.proto", package=ECHO_PACKAGE, syntax="proto3")
    string, message = descriptor_pb2.FieldDescriptorProto.TYPE_STRING, descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    optional, repeated = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

    def declare(name: str, *fields: tuple) -> None:
        m = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            m.field.add(name=field_name, number=number, type=kind, label=label,
                        **({"type_name": f".{ECHO_PACKAGE}.{type_name}"} if type_name else {}))
    declare("Header", ("key", 1, string, optional, None), ("value", 2, string, optional, None))
    declare("Context", ("namespace", 1, string, optional, None), ("ingress", 2, string, optional, None),
            ("service_name", 3, string, optional, None), ("pod", 4, string, optional, None))
    declare("Assertions", ("fully_qualified_method", 1, string, optional, None),
            ("headers", 2, message, repeated, "Header"), ("authority", 3, string, optional, None),
            ("context", 4, message, optional, "Context"))
    declare("EchoRequest")
    declare("EchoResponse", ("assertions", 1, message, optional, "Assertions"),
            ("request", 2, message, optional, "EchoRequest"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName(f"{ECHO_PACKAGE}.EchoRequest")),
            get(pool.FindMessageTypeByName(f"{ECHO_PACKAGE}.EchoResponse")))


EchoRequest, EchoResponse = _echo_messages()


@dataclass
class RequestMetadata:
    authority: str = ""                                     # the :authority to send
    metadata: dict[str, str] = field(default_factory=dict)  # outgoing metadata pairs


@dataclass
class ExpectedResponse:
    """One of the Echo methods ("Echo", "EchoTwo", "EchoThree") and what it must give: a status
    code, and for OK the backend (pod name prefix) and namespace that answered."""
    method: str = "Echo"
    request_metadata: RequestMetadata | None = None
    code: grpc.StatusCode = grpc.StatusCode.OK
    backend: str = ""
    namespace: str = ""
    # Response.Headers: the metadata the test states; compareResponse does not read it
    headers: dict[str, list[str]] = field(default_factory=dict)
    test_case_name: str = ""

    @property
    def fully_qualified_method(self) -> str:
        return f"/{ECHO_PACKAGE}.{ECHO_SERVICE}/{self.method}"

    def case_name(self, i: int) -> str:
        """GetTestCaseName."""
        if self.test_case_name:
            return self.test_case_name
        rm = self.request_metadata
        headers = ""
        if rm is not None and rm.metadata:
            headers = " with headers '{" + ",".join(f"{k}:{rm.metadata[k]}" for k in sorted(rm.metadata)) + "}'"
        request = f"{i} request to '{rm.authority if rm else ''}{self.fully_qualified_method}'{headers}"
        if self.backend:
            return f"{request} should go to {self.backend}"
        return f"{request} should receive a {self.code.name} ({self.code.value[0]})"


def send_rpc(address: str, expected: ExpectedResponse, timeout: float) -> tuple[grpc.StatusCode, object]:
    """SendRPC: (status code, the decoded EchoResponse or None)."""
    rm = expected.request_metadata
    options = [("grpc.default_authority", rm.authority)] if rm is not None and rm.authority else []
    with grpc.insecure_channel(address, options=options) as channel:
        call = channel.unary_unary(expected.fully_qualified_method, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=EchoResponse.FromString)
        metadata = [(k.lower(), v) for k, v in (rm.metadata if rm is not None else {}).items()]
        try:
            return grpc.StatusCode.OK, call(EchoRequest(), timeout=timeout, metadata=metadata or None)
        except grpc.RpcError as exc:
            return exc.code(), None


def compare_response(expected: ExpectedResponse, code: grpc.StatusCode, response) -> str | None:
    """compareResponse: None when the answer is what the test expects."""
    if expected.code != code:
        return f"expected status code to be {expected.code.name}, but got {code.name}"
    if code == grpc.StatusCode.OK:
        assertions = response.assertions
        if expected.fully_qualified_method != assertions.fully_qualified_method:
            return f"expected path to be {expected.fully_qualified_method}, got {assertions.fully_qualified_method}"
        if expected.namespace and expected.namespace != assertions.context.namespace:
            return f"expected namespace to be {expected.namespace}, got {assertions.context.namespace}"
        if not assertions.context.pod.startswith(expected.backend):
            return f"expected pod name to start with {expected.backend}, got {assertions.context.pod}"
    return None


def make_request_and_expect_eventually_consistent_response(address: str, expected: ExpectedResponse,
                                                           timeouts: Timeouts = TIMEOUTS) -> None:
    """MakeRequestAndExpectEventuallyConsistentResponse (gRPC)."""
    def check(elapsed: float) -> str | None:
        code, response = send_rpc(address, expected, max(1.0, timeouts.consistency - elapsed))
        return compare_response(expected, code, response)
    await_convergence(check, timeouts)


def make_request_and_expect_eventually_consistent_failure(address: str, expected: ExpectedResponse,
                                                          timeouts: Timeouts = TIMEOUTS) -> None:
    """MakeRequestAndExpectEventuallyConsistentFailure (gRPC): until calls consistently end in
    a status other than OK; an OK at any time fails the test at once."""
    def check(elapsed: float) -> str | None:
        code, _ = send_rpc(address, expected, max(1.0, timeouts.consistency - elapsed))
        assert code != grpc.StatusCode.OK, "Request should have failed, but got status OK"
        return None
    await_convergence(check, timeouts)


def add_entropy(expected: ExpectedResponse) -> ExpectedResponse:
    """AddEntropy: half of the calls get a random x-jitter metadata pair."""
    rm = expected.request_metadata or RequestMetadata()
    if secrets.randbelow(2):
        rm = RequestMetadata(rm.authority, {**rm.metadata, "x-jitter": str(secrets.randbelow(10000))})
    return replace(expected, request_metadata=rm)


def pod_of(address: str, expected: ExpectedResponse, timeout: float) -> str:
    """The weight sender's call: the pod that answered an OK call (AssertionError otherwise)."""
    code, response = send_rpc(address, add_entropy(expected), timeout)
    assert code == grpc.StatusCode.OK, f"expected OK response, got {code.name}"
    return response.assertions.context.pod


def expect_responses(address: str, cases: list[ExpectedResponse]) -> None:
    """Each case as a parallel subtest, as the GRPCRoute tests run them."""
    run_cases([(tc.case_name(i), lambda tc=tc: make_request_and_expect_eventually_consistent_response(address, tc))
               for i, tc in enumerate(cases)])
