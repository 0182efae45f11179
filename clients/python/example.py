#!/usr/bin/env python3
"""Segment a NIfTI file with a running unetrpp-serve and print organ volumes.

    PYTHONPATH=build/python python3 clients/python/example.py ct.nii.gz labels.nii.gz [--server localhost:50051]
"""
import argparse
import sys

from unetrpp_client import Client, ServerError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--server", default="localhost:50051")
    parser.add_argument("--token", help="bearer token (default: $UPP_TOKEN)")
    parser.add_argument("--tls-ca", help="CA certificate (PEM): connect with TLS")
    parser.add_argument("--tls-cert", help="client certificate (PEM) for mTLS")
    parser.add_argument("--tls-key", help="client key (PEM) for mTLS")
    parser.add_argument("--server-name", help="the name in the server's certificate, if not the host")
    args = parser.parse_args()
    with Client(args.server, token=args.token, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                server_name=args.server_name) as client:
        try:
            result = client.segment([args.input], outputs=["nifti"],
                                    progress=lambda p: print(f"\r{p.stage} {p.fraction:4.0%}", end="", file=sys.stderr))
        except ServerError as e:
            print(f"\nfailed: {e}", file=sys.stderr)
            return 1
    print(file=sys.stderr)
    with open(args.output, "wb") as f:
        f.write(result.outputs["nifti"])
    for name, v in result.volumes().items():
        print(f"{name:24s} {v['volume_ml']:10.1f} mL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
