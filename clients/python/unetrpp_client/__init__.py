"""Python client of unetrpp-serve (gRPC API unetrpp.v1).

The protobuf/gRPC stubs are generated from proto/ at build time (protoc and
grpc_python_plugin from Debian) into the package's _gen directory; the build
copies the package to <build>/python/unetrpp_client. Put <build>/python on
PYTHONPATH:

    PYTHONPATH=build/python python3 clients/python/example.py ct.nii.gz labels.nii.gz

This source copy (clients/python/unetrpp_client, which Python finds first
when it runs a script of clients/python) has no stubs of its own: it takes
them from <entry>/unetrpp_client/_gen of the first sys.path entry that has
them, so either copy works once the build's folder is on the path.

    from unetrpp_client import Client
    client = Client("localhost:50051")
    result = client.segment(["ct.nii.gz"], outputs=["nifti"])
    open("labels.nii.gz", "wb").write(result.outputs["nifti"])
"""
import os
import sys

_STUBS = (os.path.join("unetrpp", "v1", "segmentation_pb2.py"),
          os.path.join("unetrpp", "v1", "segmentation_pb2_grpc.py"), "health_pb2.py", "health_pb2_grpc.py")


def _find_stubs() -> str:
    """The _gen folder holding the generated stubs: this package's own, else
    the first one found under an entry of sys.path."""
    candidates = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "_gen")]
    for entry in sys.path:
        if isinstance(entry, str):
            candidates.append(os.path.join(os.path.abspath(entry or os.curdir), "unetrpp_client", "_gen"))
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, s)) for s in _STUBS):
            return folder
    raise ImportError(
        "unetrpp_client: the generated gRPC stubs (unetrpp_client/_gen) were not found beside the package or "
        "under any entry of sys.path. Build the project (cmake --build build --target python_client; it needs "
        "protoc and grpc_python_plugin) and put its python folder on the path: PYTHONPATH=build/python",
        name=__name__)


_GEN = _find_stubs()
if _GEN not in sys.path:
    sys.path.insert(0, _GEN)

from .client import (  # noqa: E402
    Client, ClientError, ConnectionSetupError, RequestError, SegmentResult, ServerError, describe_model, stage_name)

__all__ = ["Client", "ClientError", "ConnectionSetupError", "RequestError", "SegmentResult", "ServerError",
           "describe_model", "stage_name"]
