"""The client: Segment (bidirectional stream), ListModels, GetModel, health."""
import dataclasses
import json
import logging
import os
import re
import socket
import ssl
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

import health_pb2
import health_pb2_grpc
from unetrpp.v1 import segmentation_pb2 as pb
from unetrpp.v1 import segmentation_pb2_grpc as pb_grpc

log = logging.getLogger("unetrpp_client")

CHUNK_BYTES = 1 << 20
_OUTPUTS = {
    "nifti": pb.OUTPUT_KIND_NIFTI_LABELS,
    "seg": pb.OUTPUT_KIND_DICOM_SEG,
    "raw": pb.OUTPUT_KIND_RAW_LABELS,
}
_OUTPUT_NAMES = {v: k for k, v in _OUTPUTS.items()}
# How long one call waits for a connection by default (a server being
# started, a replica restarting); Client(connect_timeout=) changes it.
DEFAULT_CONNECT_TIMEOUT = 10.0
_PROBE_TIMEOUT = 1.0  # the TLS / plaintext probe of a server that refuses our connections

Input = Union[str, bytes, os.PathLike]


class ClientError(Exception):
    """Base of this package's errors."""


class RequestError(ClientError, ValueError):
    """The request cannot be made as given, found before anything is sent: an
    unknown output name, a file that cannot be read, a folder without DICOM
    files, dicom=False with a folder."""


def describe_model(info: pb.ModelInfo) -> str:
    """A model and its versions, one line each: state, since when, load time, checksum, error."""
    lines = [f"{info.name}  version {info.version or '-'}  {'ready' if info.ready else 'not serving'}"]
    for v in info.versions:
        line = f"  version {v.version}{' (default)' if v.is_default else ''}: {v.state} since {v.state_since}"
        if v.load_seconds > 0:
            line += f", loaded in {v.load_seconds:.2f} s"
        if v.weights_sha256:
            line += f", sha256 {v.weights_sha256[:12]}"
        if v.error:
            line += f", error: {v.error}"
        lines.append(line)
    return "\n".join(lines)


class ServerError(ClientError):
    """A call ended with a non-OK gRPC status. retry_after: seconds the server
    suggests waiting before sending the request again (its "retry-after-ms"
    trailer, on RESOURCE_EXHAUSTED for load or quotas); None when a retry
    cannot help (the request is over a per-request limit) or for other codes."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: Optional[float] = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


class ConnectionSetupError(ServerError):
    """The client and the server disagree on how to connect: the server speaks
    TLS and the client was given no tls_ca, or the client uses TLS and the
    server is plaintext. Retrying cannot help: code FAILED_PRECONDITION (not
    UNAVAILABLE), and segment(attempts=) does not retry it."""

    def __init__(self, message: str):
        super().__init__(grpc.StatusCode.FAILED_PRECONDITION, message)

    def __str__(self) -> str:
        return self.message


def stage_name(stage: int) -> str:
    """A pb.Stage as a word: STAGE_INFERENCE -> "inference"."""
    try:
        return pb.Stage.Name(stage)[len("STAGE_"):].lower()
    except ValueError:
        return f"stage {stage}"


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def _trace_metadata(traceparent: str, tracestate: str) -> Tuple[Tuple[str, str], ...]:
    """The W3C trace context to send (traceparent, then tracestate), from the
    arguments or else $TRACEPARENT / $TRACESTATE (the OpenTelemetry carrier
    for processes); RequestError for a traceparent that is not W3C's."""
    traceparent = traceparent or os.environ.get("TRACEPARENT", "")
    tracestate = tracestate or os.environ.get("TRACESTATE", "")
    if not traceparent:
        return ()
    m = _TRACEPARENT.fullmatch(traceparent)
    if not m or traceparent.startswith("ff") or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        raise RequestError(f"traceparent must be W3C's 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, "
                           f"not {traceparent!r}")
    return (("traceparent", traceparent),) + ((("tracestate", tracestate),) if tracestate else ())


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
    outputs: Dict[str, bytes]  # "nifti", "seg", "raw": those asked for
    summary: pb.Summary
    # Files of an input folder that the client left out (not DICOM: no "DICM"
    # at byte 128 and no DICOM group at the start), e.g. a README.txt.
    skipped_files: List[str] = dataclasses.field(default_factory=list)

    @property
    def input(self) -> pb.InputSummary:
        """What of the input the server segmented: the DICOM series, the
        instances used, and those it skipped by reason (header.input)."""
        return self.header.input

    def volumes(self) -> Dict[str, dict]:
        """Per label name: voxels and volume in mL (background left out)."""
        names = {l.value: l.name for l in self.header.labels}
        return {names.get(v.value, str(v.value)): {"voxels": v.voxels, "volume_ml": v.volume_ml}
                for v in self.header.volumes if v.value != 0}

    def timings(self) -> Dict[str, float]:
        """Seconds per stage name ("receiving", "inference", ...)."""
        return {stage_name(t.stage): t.seconds for t in self.summary.timings}


# ------------------------------------------------------------------ inputs

def _looks_like_dicom(data: bytes) -> bool:
    """The server's rule (imageio::LooksLikeDicom): a DICOM Part 10 file
    ("DICM" after the 128-byte preamble) or a bare data set starting, little
    endian, with an element of group 0002 (element < 0x0200) or 0008
    (element < 0x2000). NIfTI (348 or 540 as the first int32), gzip and text
    never match."""
    if data[128:132] == b"DICM":
        return True
    if len(data) < 8:
        return False
    group, element = int.from_bytes(data[0:2], "little"), int.from_bytes(data[2:4], "little")
    return (group == 0x0008 and element < 0x2000) or (group == 0x0002 and element < 0x0200)


def _read(path: Input) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise RequestError(f"cannot read {os.fsdecode(path)}: {e.strerror or e}") from e


def _folder_files(folder: Input) -> Tuple[List[bytes], List[str]]:
    """The DICOM files of a folder (its regular files, not its subfolders,
    sorted by name, like upp-client) and the paths of the others."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise RequestError(f"cannot list {os.fsdecode(folder)}: {e.strerror or e}") from e
    blobs, skipped = [], []
    for name in names:
        path = os.path.join(os.fsdecode(folder), os.fsdecode(name))
        if not os.path.isfile(path):
            continue
        data = _read(path)
        if _looks_like_dicom(data):
            blobs.append(data)
        else:
            skipped.append(path)
    if not blobs:
        raise RequestError(f"{os.fsdecode(folder)} holds no DICOM files"
                           + (f" ({len(skipped)} other file(s))" if skipped else ""))
    if skipped:
        # The count only: DICOM file names are often SOP Instance UIDs, and
        # this log may reach an integrator's central logs (the names are in
        # result.skipped_files).
        log.warning("%d file(s) that are not DICOM left out of the folder (result.skipped_files)", len(skipped))
    return blobs, skipped


def _gather(inputs, dicom: Optional[bool]) -> Tuple[List[bytes], bool, List[str]]:
    """The inputs' bytes, whether they are DICOM, and the files left out."""
    if isinstance(inputs, (str, bytes, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise RequestError("no inputs: give NIfTI file(s) or a DICOM folder")
    folders = [i for i in inputs if not isinstance(i, bytes) and os.path.isdir(i)]
    if folders and dicom is False:
        raise RequestError(f"{os.fsdecode(folders[0])} is a folder: a DICOM series is sent with dicom=True "
                           "(or dicom left unset)")
    blobs: List[bytes] = []
    skipped: List[str] = []
    for item in inputs:
        if isinstance(item, bytes):
            blobs.append(item)
        elif os.path.isdir(item):
            files, left_out = _folder_files(item)
            blobs += files
            skipped += left_out
        else:
            blobs.append(_read(item))
    if dicom is None:
        dicom = bool(folders) or all(_looks_like_dicom(b) for b in blobs)
    return blobs, dicom, skipped


def _output_kinds(outputs) -> List[int]:
    if isinstance(outputs, str):
        outputs = [outputs]
    kinds = []
    for name in outputs:
        if name not in _OUTPUTS:
            raise RequestError(f"unknown output {name!r}: the outputs are {', '.join(_OUTPUTS)}")
        if _OUTPUTS[name] not in kinds:
            kinds.append(_OUTPUTS[name])
    return kinds


# -------------------------------------------------------------- connecting

def _host_port(target: str) -> Optional[Tuple[str, int]]:
    """The first host and port of a gRPC target ("host:port", "dns:///h:p",
    "ipv4:a:p,b:p", "[::1]:p"); None for what cannot be probed (unix sockets)."""
    t = target
    if t.startswith("unix"):
        return None
    for prefix in ("dns:", "ipv4:", "ipv6:"):
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    if t.startswith("//"):  # dns://authority/host:port
        t = t[2:].partition("/")[2]
    t = t.split(",")[0]
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "443"
    elif t.count(":") == 1:
        host, port = t.split(":")
    elif ":" not in t:
        host, port = t, "443"
    else:
        host, port = t.rpartition(":")[0], t.rpartition(":")[2]
    try:
        return (host, int(port)) if host else None
    except ValueError:
        return None


def _speaks_tls(host: str, port: int) -> Optional[bool]:
    """True: the server completed a TLS handshake (certificate not checked) or
    answered with a TLS alert; False: it answered, but not in TLS; None: no
    TCP connection."""
    try:
        sock = socket.create_connection((host, port), timeout=_PROBE_TIMEOUT)
    except OSError:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with context.wrap_socket(sock, server_hostname=host):
            return True
    except ssl.SSLError as e:
        return "ALERT" in (e.reason or "").upper()  # a TLS server refusing us (e.g. no client certificate)
    except OSError:
        return False
    finally:
        sock.close()


def _speaks_plaintext_http2(host: str, port: int) -> Optional[bool]:
    """True: the server answers an HTTP/2 connection preface with a SETTINGS
    frame (plaintext gRPC); False: it answered otherwise; None: no TCP connection."""
    try:
        sock = socket.create_connection((host, port), timeout=_PROBE_TIMEOUT)
    except OSError:
        return None
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        frame = b""
        while len(frame) < 9:
            got = sock.recv(9 - len(frame))
            if not got:
                break
            frame += got
        return len(frame) == 9 and frame[3] == 0x04  # frame type SETTINGS
    except OSError:
        return False
    finally:
        sock.close()


class Client:
    def __init__(self, target: str = "localhost:50051", channel: Optional[grpc.Channel] = None, *,
                 token: Optional[str] = None, tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, server_name: Optional[str] = None,
                 load_balancing: Optional[str] = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
        """token: sent as "authorization: Bearer <token>" (default: $UPP_TOKEN).
        tls_ca: a CA file (PEM) turns TLS on; tls_cert/tls_key add a client
        certificate (mTLS); server_name overrides the name checked in the
        server's certificate. load_balancing="round_robin" spreads calls over
        every address the target resolves to (a headless Kubernetes service,
        "dns:///name:port", or "ipv4:a:port,b:port"), skipping servers that
        are not SERVING (draining).

        connect_timeout: how long each call (each attempt of segment()) waits
        for a connection, within its deadline: a server being started or
        restarted is waited for; 0 fails at once when none is open. The
        channel tries again every second at most while it waits. A TLS
        mix-up (no tls_ca for a TLS server, tls_ca for a plaintext one)
        raises ConnectionSetupError instead of waiting."""
        self._target = target
        self._connect_timeout = max(0.0, connect_timeout)
        self._tls = None if channel is not None else bool(tls_ca)  # None: a channel of the caller's
        options = [("grpc.max_receive_message_length", 4 << 20), ("grpc.max_send_message_length", 4 << 20),
                   # Reconnect soon after a server comes (back) up: gRPC's backoff grows to 120 s.
                   ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 1000)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if load_balancing:
            options.append(("grpc.service_config", json.dumps({
                "loadBalancingConfig": [{load_balancing: {}}], "healthCheckConfig": {"serviceName": ""}})))
        if channel is None and tls_ca:
            ca = _read(tls_ca)
            cert = key = None
            if tls_cert or tls_key:
                if not (tls_cert and tls_key):
                    raise RequestError("mTLS needs both tls_cert and tls_key")
                cert, key = _read(tls_cert), _read(tls_key)
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

    # The connection -------------------------------------------------------

    def _check_tls(self) -> bool:
        """Raises ConnectionSetupError when the server at the target is
        reachable and speaks the other transport (TLS vs plaintext); else
        tells whether it is reachable (True too when it cannot be probed)."""
        address = _host_port(self._target) if self._tls is not None else None
        if address is None:
            return True
        speaks = _speaks_tls(*address) if not self._tls else _speaks_plaintext_http2(*address)
        if speaks is None:
            return False
        if not self._tls and speaks:
            raise ConnectionSetupError(
                f"the server at {self._target} speaks TLS: pass tls_ca (its CA certificate, PEM; "
                "--tls-ca in example.py and upp-client)")
        if self._tls and speaks:
            raise ConnectionSetupError(
                f"the server at {self._target} is plaintext (no TLS): leave tls_ca out, "
                "or configure TLS on the server")
        return True

    def _ready(self) -> bool:
        """Whether the channel is connected, asked without making it
        connect. Calls on a connected channel go straight out: no check of
        ours before them (under round_robin it would also take a turn).
        grpcio's public way, subscribe(), polls from a thread that fails
        when the channel is closed under it; its Cython channel answers
        directly. False when that cannot be asked (a caller's own channel
        of another kind): then the wait below checks the connection."""
        try:
            return (self._channel._channel.check_connectivity_state(False)
                    == grpc.ChannelConnectivity.READY.value[0])
        except Exception:  # noqa: BLE001 (another grpcio, another channel class)
            return False

    def _connect(self, limit: Optional[float]) -> None:
        """Waits until the channel is connected: connect_timeout seconds at
        most, and no longer than `limit` (what is left of a call's deadline).
        The wait is a health check that waits for the channel to be ready
        (which makes an idle channel connect); meanwhile the server's port is
        probed for a TLS mix-up. Raises ServerError UNAVAILABLE
        (DEADLINE_EXCEEDED when the deadline cut the wait short) or
        ConnectionSetupError."""
        if self._ready():
            return
        wait = self._connect_timeout if limit is None else min(self._connect_timeout, max(0.0, limit))
        request = health_pb2.HealthCheckRequest()
        if wait > 0:
            call = self._health.Check.future(request, timeout=wait, metadata=self._metadata, wait_for_ready=True)
            try:
                probe_at = time.monotonic() + min(0.3, wait / 2)
                while True:
                    if probe_at is not None and time.monotonic() >= probe_at:
                        # Still waiting: a server that is up and fails our
                        # handshakes may speak the other transport.
                        probe_at = None if self._check_tls() else time.monotonic() + 1.0
                    try:
                        call.result(timeout=None if probe_at is None else max(0.0, probe_at - time.monotonic()))
                        return
                    except grpc.FutureTimeoutError:
                        continue
                    except grpc.RpcError:
                        break
            finally:
                call.cancel()
            if call.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                   grpc.StatusCode.CANCELLED):
                return  # the server answered: connected (e.g. UNAUTHENTICATED, UNIMPLEMENTED)
        self._check_tls()
        # The channel's last error, from a check that does not wait.
        try:
            self._health.Check(request, timeout=0.5, metadata=self._metadata)
            return
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return
            details = e.details() if e.code() == grpc.StatusCode.UNAVAILABLE else ""
        cut_short = limit is not None and limit < self._connect_timeout
        code = grpc.StatusCode.DEADLINE_EXCEEDED if cut_short else grpc.StatusCode.UNAVAILABLE
        raise ServerError(code, f"cannot connect to {self._target} within {wait:g} s"
                          + (f": {details}" if details else ""))

    # Calls ----------------------------------------------------------------

    def segment(self, inputs: Union[Input, Sequence[Input]], *, dicom: Optional[bool] = None,
                outputs: Iterable[str] = ("nifti",), model: str = "", mirror: bool = False,
                step: float = 0.0, priority: int = 0, client_request_id: str = "",
                series_instance_uid: str = "", deadline: Optional[float] = None,
                progress: Optional[Callable[[pb.Progress], None]] = None,
                attempts: int = 1, mode: str = "", labels: Iterable[str] = (), traceparent: str = "",
                tracestate: str = "") -> SegmentResult:
        """Segments one volume: NIfTI file(s) (one per channel), or a DICOM
        series: a folder (its files, not its subfolders; files that are not
        DICOM, such as a README, are left out and listed in
        result.skipped_files) or the instances' paths or bytes. dicom: None
        (the default) tells by the inputs (a folder, or every file starting
        like DICOM), True/False say it. series_instance_uid: the series to
        segment when the instances hold more than one. mode: "full", "fast"
        or "fastest" ("": the model's default); labels: names of the labels
        to segment (the result then holds only those; docs/server.md).
        traceparent, tracestate: the W3C trace context the server's spans
        continue (default: $TRACEPARENT, $TRACESTATE; docs/server.md Tracing).

        outputs: "nifti", "seg" (DICOM SEG, DICOM input only), "raw"; only
        those are asked for. progress: called with each pb.Progress
        (stage_name(p.stage) gives its name). deadline: seconds for the whole
        call, retries included.

        attempts: tries on UNAVAILABLE (no connection within connect_timeout,
        a replica draining or gone): the whole request again, after 0.2 s,
        0.4 s, ... (at most 2 s) when it was sent, at once after a wait for
        a connection, within the deadline: a segmentation has no side effects.

        Raises RequestError for a mistake found before sending, ServerError
        for a non-OK status, ConnectionSetupError for a TLS mix-up."""
        kinds = _output_kinds(outputs)
        metadata = self._metadata + _trace_metadata(traceparent, tracestate)
        blobs, dicom, skipped = _gather(inputs, dicom)
        header = pb.RequestHeader(
            model=model, format=pb.INPUT_FORMAT_DICOM if dicom else pb.INPUT_FORMAT_NIFTI,
            outputs=kinds, mirror=mirror, step=step, priority=priority,
            client_request_id=client_request_id, expected_input_bytes=sum(len(b) for b in blobs))
        if series_instance_uid:
            header.series_instance_uid = series_instance_uid
        if mode:
            if mode not in ("full", "fast", "fastest"):
                raise RequestError(f"mode must be full, fast or fastest, not {mode!r}")
            header.mode = pb.SpeedMode.Value("SPEED_MODE_" + mode.upper())
        header.labels.extend([labels] if isinstance(labels, str) else labels)

        def requests() -> Iterator[pb.SegmentRequest]:
            yield pb.SegmentRequest(header=header)
            for index, blob in enumerate(blobs):
                for off in range(0, len(blob), CHUNK_BYTES):
                    yield pb.SegmentRequest(chunk=pb.InputChunk(input_index=index, data=blob[off:off + CHUNK_BYTES]))
            yield pb.SegmentRequest(end=pb.EndOfInput())

        end = None if deadline is None else time.monotonic() + deadline
        backoff = 0.2
        attempts = max(1, attempts)
        for attempt in range(1, attempts + 1):
            left = None if end is None else max(0.0, end - time.monotonic())
            connected = False
            try:
                self._connect(left)
                connected = True
                left = None if end is None else max(0.0, end - time.monotonic())
                result = self._segment_once(requests, left, progress, metadata)
                result.skipped_files = skipped
                return result
            except ConnectionSetupError:
                raise
            except ServerError as e:
                if e.code != grpc.StatusCode.UNAVAILABLE or attempt >= attempts:
                    raise
                # Sent and refused or cut (or no wait for a connection): wait
                # a little before the next try; after a wait, try at once.
                pause = backoff if connected or self._connect_timeout == 0 else 0.0
                if end is not None and time.monotonic() + pause >= end:
                    raise
                time.sleep(pause)
                backoff = min(backoff * 2, 2.0) if pause else backoff
        raise AssertionError("unreachable")

    def _segment_once(self, requests, deadline, progress, metadata) -> SegmentResult:
        result = SegmentResult("", pb.ResultHeader(), {}, pb.Summary())
        chunks: Dict[str, List[bytes]] = {}
        try:
            for response in self._stub.Segment(requests(), timeout=deadline, metadata=metadata):
                kind = response.WhichOneof("kind")
                if kind == "accepted":
                    result.server_request_id = response.accepted.server_request_id
                elif kind == "progress" and progress:
                    progress(response.progress)
                elif kind == "result_header":
                    result.header = response.result_header
                elif kind == "result_chunk":
                    output = response.result_chunk.output
                    chunks.setdefault(_OUTPUT_NAMES.get(output, str(output)), []).append(response.result_chunk.data)
                elif kind == "summary":
                    result.summary = response.summary
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details(), _retry_after(e.trailing_metadata())) from None
        result.outputs = {k: b"".join(v) for k, v in chunks.items()}
        for kind, size in zip(result.header.outputs, result.header.output_bytes):
            if len(result.outputs.get(_OUTPUT_NAMES.get(kind, str(kind)), b"")) != size:
                raise ServerError(grpc.StatusCode.DATA_LOSS, "a result output arrived incomplete")
        return result

    def models(self) -> pb.ListModelsResponse:
        self._connect(30)
        try:
            return self._stub.ListModels(pb.ListModelsRequest(), timeout=30, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None

    def model(self, name: str = "") -> pb.ModelInfo:
        self._connect(30)
        try:
            return self._stub.GetModel(pb.GetModelRequest(name=name), timeout=30, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None

    def load_model(self, name: str, version: str = "", keep_previous: bool = False,
                   drain_then_load: bool = False, timeout: float = 600) -> pb.ModelInfo:
        """Loads a version (empty: the newest offered) beside the serving one and makes it
        the default (the admin role); the model's state after it."""
        self._connect(30)
        request = pb.LoadModelRequest(name=name, version=version, keep_previous=keep_previous,
                                      drain_then_load=drain_then_load)
        try:
            return self._stub.LoadModel(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None

    def unload_model(self, name: str, version: str) -> pb.ModelInfo:
        """Unloads a version once its requests are done (the admin role)."""
        self._connect(30)
        try:
            return self._stub.UnloadModel(pb.UnloadModelRequest(name=name, version=version), timeout=60,
                                          metadata=self._metadata)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None

    def healthy(self, service: str = "") -> bool:
        self._connect(10)
        try:
            r = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        except grpc.RpcError as e:
            raise ServerError(e.code(), e.details()) from None
        return r.status == health_pb2.HealthCheckResponse.SERVING
