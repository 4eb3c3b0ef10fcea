"""A CRI client written with grpcio, as monitoring agents and scripts write them.

Usage: grpcio_client.py SOCKET

Calls RuntimeService/Version and ImageService/ImageFsInfo over unix://SOCKET on a
channel with grpcio's default options (so grpcio picks the :authority itself), and
prints what the answers hold as one JSON object. No generated stubs: the requests are
empty messages, and the few response fields read are decoded here. A failed call
prints its status code and details and exits 1.
"""

import json
import sys

import grpc

TIMEOUT_S = 10


def fields(buf):
    """Yields (field number, value) of a protobuf message: an int for a varint, bytes
    for a length-delimited field."""
    i = 0

    def varint():
        nonlocal i
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(buf):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            yield number, varint()
        elif wire_type == 2:
            n = varint()
            yield number, buf[i : i + n]
            i += n
        else:
            raise ValueError(f"field {number}: wire type {wire_type} not expected here")


def strings(buf):
    """The string fields of a message, by field number."""
    return {n: v.decode() for n, v in fields(buf) if isinstance(v, bytes)}


def call(channel, method):
    rpc = channel.unary_unary(
        method,
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        return rpc(b"", timeout=TIMEOUT_S)
    except grpc.RpcError as e:
        print(f"{method}: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)


def main():
    (socket,) = sys.argv[1:]
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        version = strings(call(channel, "/runtime.v1.RuntimeService/Version"))
        fs_info = call(channel, "/runtime.v1.ImageService/ImageFsInfo")
    # ImageFsInfoResponse: image_filesystems = 1, container_filesystems = 2, each a
    # FilesystemUsage whose fs_id (2) is a FilesystemIdentifier with mountpoint = 1.
    mountpoints = {1: [], 2: []}
    for number, usage in fields(fs_info):
        for n, fs_id in fields(usage):
            if n == 2:
                mountpoints[number].append(strings(fs_id).get(1, ""))
    print(
        json.dumps(
            {
                "grpcio": grpc.__version__,
                "runtime_name": version.get(2, ""),
                "runtime_version": version.get(3, ""),
                "runtime_api_version": version.get(4, ""),
                "image_mountpoints": mountpoints[1],
                "container_mountpoints": mountpoints[2],
            }
        )
    )


if __name__ == "__main__":
    main()
