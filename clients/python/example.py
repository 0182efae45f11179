#!/usr/bin/env python3
"""Segment a NIfTI file or a DICOM series with a running unetrpp-serve and print organ volumes.

    PYTHONPATH=build/python python3 clients/python/example.py ct.nii.gz labels.nii.gz [--server localhost:50051]
    PYTHONPATH=build/python python3 clients/python/example.py dicom-folder/ labels.nii.gz --seg labels-seg.dcm

INPUT: a NIfTI file (several: one per channel) or a folder of DICOM files
(files in it that are not DICOM are left out). Exit status: 0 done, 1 usage,
unreadable input or a TLS mix-up, 2 refused, 3 unavailable or busy (retry),
4 deadline or cancelled, 5 other, 7 unauthenticated or not permitted (as
upp-client).
"""
import argparse
import logging
import sys

import grpc

from unetrpp_client import ConnectionSetupError, Client, RequestError, ServerError, stage_name

_EXIT = {
    grpc.StatusCode.INVALID_ARGUMENT: 2, grpc.StatusCode.NOT_FOUND: 2, grpc.StatusCode.FAILED_PRECONDITION: 2,
    grpc.StatusCode.OUT_OF_RANGE: 2, grpc.StatusCode.UNAVAILABLE: 3, grpc.StatusCode.DEADLINE_EXCEEDED: 4,
    grpc.StatusCode.CANCELLED: 4, grpc.StatusCode.UNAUTHENTICATED: 7, grpc.StatusCode.PERMISSION_DENIED: 7,
}


def exit_code(error: ServerError) -> int:
    if isinstance(error, ConnectionSetupError):
        return 1
    if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return 3 if error.retry_after is not None else 2
    return _EXIT.get(error.code, 5)


class Progress:
    """Stage names and percentages: on one line on a terminal, else a line per stage."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = None

    def __call__(self, p) -> None:
        name = stage_name(p.stage)
        windows = f" ({p.windows_done}/{p.windows_total} windows)" if p.windows_total else ""
        if self.tty:
            print(f"\r{name:14s} {p.fraction:4.0%}{windows}\033[K", end="", file=sys.stderr, flush=True)
        elif name != self.last:
            print(name, file=sys.stderr, flush=True)
        self.last = name

    def done(self) -> None:
        if self.tty and self.last is not None:
            print(file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="+", help="NIfTI file(s) (one per channel) or a DICOM folder")
    parser.add_argument("output", help="the label map to write (NIfTI, .nii.gz)")
    parser.add_argument("--seg", help="also write a DICOM SEG here (DICOM input)")
    parser.add_argument("--series", default="", help="DICOM: the SeriesInstanceUID to segment (a folder with several)")
    parser.add_argument("--model", default="", help="the model (default: the server's)")
    parser.add_argument("--server", default="localhost:50051")
    parser.add_argument("--deadline", type=float, help="seconds for the whole request")
    parser.add_argument("--attempts", type=int, default=3, help="tries when the server is unavailable (default 3)")
    parser.add_argument("--wait", type=float, default=10.0,
                        help="seconds each try waits for a server that is starting (default 10)")
    parser.add_argument("--token", help="bearer token (default: $UPP_TOKEN)")
    parser.add_argument("--tls-ca", help="CA certificate (PEM): connect with TLS")
    parser.add_argument("--tls-cert", help="client certificate (PEM) for mTLS")
    parser.add_argument("--tls-key", help="client key (PEM) for mTLS")
    parser.add_argument("--server-name", help="the name in the server's certificate, if not the host")
    args = parser.parse_args()
    logging.basicConfig(format="%(message)s")  # the client's warnings: files of a folder left out
    outputs = ["nifti"] + (["seg"] if args.seg else [])
    progress = Progress()
    try:
        with Client(args.server, token=args.token, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                    server_name=args.server_name, connect_timeout=args.wait) as client:
            result = client.segment(args.input, outputs=outputs, model=args.model, series_instance_uid=args.series,
                                    deadline=args.deadline, attempts=args.attempts, progress=progress)
    except RequestError as e:
        progress.done()
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ServerError as e:
        progress.done()
        print(f"failed: {e}", file=sys.stderr)
        return exit_code(e)
    progress.done()
    with open(args.output, "wb") as f:
        f.write(result.outputs["nifti"])
    if args.seg:
        with open(args.seg, "wb") as f:
            f.write(result.outputs["seg"])
    used = result.input
    if used.series_instance_uid or used.instances_used:
        series = f"series {used.series_instance_uid}: " if used.series_instance_uid else ""
        print(f"input: {series}{used.instances_used} used", file=sys.stderr)
    for s in used.skipped:
        print(f"input: {s.count} skipped ({s.reason})", file=sys.stderr)
    for name, v in result.volumes().items():
        print(f"{name:24s} {v['volume_ml']:10.1f} mL")
    timings = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings().items())
    if timings:
        print(f"timings: {timings}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
