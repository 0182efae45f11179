"""The client: Segment (bidirectional stream), ListModels, GetModel, health."""
import dataclasses
import json
import os
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import grpc

import health_pb2
import health_pb2_grpc
from unetrpp.v1 import segmentation_pb2 as pb
from unetrpp.v1 import segmentation_pb2_grpc as pb_grpc

CHUNK_BYTES = 1 << 20
_OUTPUTS = {
    "nifti": pb.OUTPUT_KIND_NIFTI_LABELS,
    "seg": pb.OUTPUT_KIND_DICOM_SEG,
    "raw": pb.OUTPUT_KIND_RAW_LABELS,
}
_OUTPUT_NAMES = {v: k for k, v in _OUTPUTS.items()}


class ServerError(Exception):
    """A call ended with a non-OK gRPC status. retry_after: seconds the server
    suggests waiting before sending the request again (its "retry-after-ms"
    trailer, on RESOURCE_EXHAUSTED for load or quotas); None when a retry
    cannot help (the request is over a per-request limit) or for other codes."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: Optional[float] = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _retry_after(trailing_metadata) -> Optional[float]:
    """The server's retry hint in seconds, from a call's trailing metadata."""
    for key, value in trailing_metadata or ():
        if key == "retry-after-ms":
            try:
                ms = int(value)
            except ValueError:
                return None
            return ms / 1000.0 if ms >= 0 else None
    return None


@dataclasses.dataclass
class SegmentResult:
    server_request_id: str
    header: pb.ResultHeader
    outputs: Dict[str, bytes]  # "nifti", "seg", "raw"
    summary: pb.Summary

    def volumes(self) -> Dict[str, dict]:
        """Per label name: voxels and volume in mL (background left out)."""
        names = {l.value: l.name for l in self.header.labels}
        return {names.get(v.value, str(v.value)): {"voxels": v.voxels, "volume_ml": v.volume_ml}
                for v in self.header.volumes if v.value != 0}


def _read(item: Union[str, bytes, os.PathLike]) -> bytes:
    if isinstance(item, bytes):
        return item
    with open(item, "rb") as f:
        return f.read()


class Client:
    def __init__(self, target: str = "localhost:50051", channel: Optional[grpc.Channel] = None, *,
                 token: Optional[str] = None, tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, server_name: Optional[str] = None,
                 load_balancing: Optional[str] = None):
        """token: sent as "authorization: Bearer <token>" (default: $UPP_TOKEN).
        tls_ca: a CA file (PEM) turns TLS on; tls_cert/tls_key add a client
        certificate (mTLS); server_name overrides the name checked in the
        server's certificate. load_balancing="round_robin" spreads calls over
        every address the target resolves to (a headless Kubernetes service,
        "dns:///name:port", or "ipv4:a:port,b:port"), skipping servers that
        are not SERVING (draining)."""
        options = [("grpc.max_receive_message_length", 4 << 20), ("grpc.max_send_message_length", 4 << 20)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if load_balancing:
            options.append(("grpc.service_config", json.dumps({
                "loadBalancingConfig": [{load_balancing: {}}], "healthCheckConfig": {"serviceName": ""}})))
        if channel is None and tls_ca:
            with open(tls_ca, "rb") as f:
                ca = f.read()
            cert = key = None
            if tls_cert:
                with open(tls_cert, "rb") as f:
                    cert = f.read()
                with open(tls_key, "rb") as f:
                    key = f.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
            channel = grpc.secure_channel(target, credentials, options=options)
        self._channel = channel or grpc.insecure_channel(target, options=options)
        token = token if token is not None else os.environ.get("UPP_TOKEN")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub = pb_grpc.SegmentationStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def segment(self, inputs: Sequence[Union[str, bytes, os.PathLike]], *, dicom: bool = False,
                outputs: Iterable[str] = ("nifti",), model: str = "", mirror: bool = False,
                step: float = 0.0, priority: int = 0, client_request_id: str = "",
                deadline: Optional[float] = None,
                progress: Optional[Callable[[pb.Progress], None]] = None,
                attempts: int = 1) -> SegmentResult:
        """Segments one volume: NIfTI file(s) (one per channel), or the
        instances of a DICOM series with dicom=True (a directory path is
        expanded to its files). Raises ServerError on a non-OK status.
        attempts: tries on UNAVAILABLE (a replica draining or gone), the whole
        request again after 0.2 s, 0.4 s, ... (at most 2 s), within the
        deadline: a segmentation has no side effects."""
        if dicom and len(inputs) == 1 and isinstance(inputs[0], (str, os.PathLike)) and os.path.isdir(inputs[0]):
            inputs = sorted(os.path.join(inputs[0], n) for n in os.listdir(inputs[0]))
        blobs = [_read(i) for i in inputs]
        header = pb.RequestHeader(
            model=model, format=pb.INPUT_FORMAT_DICOM if dicom else pb.INPUT_FORMAT_NIFTI,
            outputs=[_OUTPUTS[o] for o in outputs], mirror=mirror, step=step, priority=priority,
            client_request_id=client_request_id, expected_input_bytes=sum(len(b) for b in blobs))

        def requests() -> Iterator[pb.SegmentRequest]:
            yield pb.SegmentRequest(header=header)
            for index, blob in enumerate(blobs):
                for off in range(0, len(blob), CHUNK_BYTES):
                    yield pb.SegmentRequest(chunk=pb.InputChunk(input_index=index, data=blob[off:off + CHUNK_BYTES]))
            yield pb.SegmentRequest(end=pb.EndOfInput())

        end = None if deadline is None else time.monotonic() + deadline
        backoff = 0.2
        for attempt in range(1, max(1, attempts) + 1):
            try:
                left = None if end is None else max(0.0, end - time.monotonic())
                return self._segment_once(requests, left, progress)
            except ServerError as e:
                if (e.code != grpc.StatusCode.UNAVAILABLE or attempt >= attempts
                        or (end is not None and time.monotonic() + backoff >= end)):
                    raise
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        raise AssertionError("unreachable")

    def _segment_once(self, requests, deadline, progress) -> SegmentResult:
        result = SegmentResult("", pb.ResultHeader(), {}, pb.Summary())
        chunks: Dict[str, List[bytes]] = {}
        try:
            for response in self._stub.Segment(requests(), timeout=deadline, metadata=self._metadata):
                kind = response.WhichOneof("kind")
                if kind == "accepted":
                    result.server_request_id = response.accepted.server_request_id
                elif kind == "progress" and progress:
                    progress(response.progress)
                elif kind == "result_header":
                    result.header = response.result_header
                elif kind == "result_chunk":
                    chunks.setdefault(_OUTPUT_NAMES[response.result_chunk.output], []).append(
                        response.result_chunk.data)
                elif kind == "summary":
                    result.summary = response.summary
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details(), _retry_after(e.trailing_metadata())) from None
        result.outputs = {k: b"".join(v) for k, v in chunks.items()}
        for kind, size in zip(result.header.outputs, result.header.output_bytes):
            if len(result.outputs.get(_OUTPUT_NAMES[kind], b"")) != size:
                raise ServerError(grpc.StatusCode.DATA_LOSS, "a result output arrived incomplete")
        return result

    def models(self) -> pb.ListModelsResponse:
        try:
            return self._stub.ListModels(pb.ListModelsRequest(), timeout=30, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None

    def model(self, name: str = "") -> pb.ModelInfo:
        try:
            return self._stub.GetModel(pb.GetModelRequest(name=name), timeout=30, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None

    def healthy(self, service: str = "") -> bool:
        try:
            r = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None
        return r.status == health_pb2.HealthCheckResponse.SERVING
