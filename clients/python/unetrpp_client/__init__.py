"""Python client of unetrpp-serve (gRPC API unetrpp.v1).

The protobuf/gRPC stubs are generated from proto/ at build time (protoc and
grpc_python_plugin from Debian) into this package's _gen directory; the build
copies the package to <build>/python/unetrpp_client. Put <build>/python on
PYTHONPATH.

    from unetrpp_client import Client
    client = Client("localhost:50051")
    result = client.segment(["ct.nii.gz"], outputs=["nifti"])
    open("labels.nii.gz", "wb").write(result.outputs["nifti"])
"""
import os
import sys

_GEN = os.path.join(os.path.dirname(__file__), "_gen")
if _GEN not in sys.path:
    sys.path.insert(0, _GEN)

from .client import Client, SegmentResult, ServerError  # noqa: E402

__all__ = ["Client", "SegmentResult", "ServerError"]
