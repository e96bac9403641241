#!/usr/bin/env python3
"""Asks a CQL node for its release version over the native protocol (v4), with no driver.

Usage: cql_probe.py HOST PORT [TIMEOUT_S [USER PASSWORD]]. Prints the version and exits 0 when the
node answers a real query (SELECT release_version FROM system.local); exits 1 otherwise. A node
with password authentication is answered with USER and PASSWORD (SASL PLAIN); it is ready once
its roles exist. Used by services.sh to decide readiness, so it must not depend on anything the
test run installs later.
"""
import socket
import struct
import sys

VERSION_REQUEST = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x03, 0x07, 0x08
OP_AUTH_RESPONSE, OP_AUTH_SUCCESS = 0x0F, 0x10


def frame(stream, opcode, body):
    return struct.pack(">BBhBi", VERSION_REQUEST, 0, stream, opcode, len(body)) + body


def string(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def long_string(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def read_frame(sock):
    _version, _flags, _stream, opcode, length = struct.unpack(">BBhBi", read_exact(sock, 9))
    return opcode, read_exact(sock, length)


def first_text_cell(body):
    kind = struct.unpack(">i", body[:4])[0]
    if kind != 2:  # Rows
        raise ValueError("result is not rows")
    pos = 4
    flags, columns = struct.unpack(">ii", body[pos:pos + 8])
    pos += 8
    if flags & 0x0002:  # has_more_pages: paging state
        n = struct.unpack(">i", body[pos:pos + 4])[0]
        pos += 4 + max(n, 0)
    if flags & 0x0001:  # global table spec
        for _ in range(2):
            n = struct.unpack(">H", body[pos:pos + 2])[0]
            pos += 2 + n
    for _ in range(columns):
        if not flags & 0x0001:
            for _ in range(2):
                n = struct.unpack(">H", body[pos:pos + 2])[0]
                pos += 2 + n
        n = struct.unpack(">H", body[pos:pos + 2])[0]
        pos += 2 + n
        pos += 2  # type id (varchar: no extra)
    rows = struct.unpack(">i", body[pos:pos + 4])[0]
    pos += 4
    if rows < 1:
        raise ValueError("no rows")
    n = struct.unpack(">i", body[pos:pos + 4])[0]
    return body[pos + 4:pos + 4 + n].decode()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    user, password = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else ("", "")
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            startup = struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")
            sock.sendall(frame(0, OP_STARTUP, startup))
            opcode, body = read_frame(sock)
            if opcode == OP_AUTHENTICATE:
                token = b"\0" + user.encode() + b"\0" + password.encode()
                sock.sendall(frame(0, OP_AUTH_RESPONSE, struct.pack(">i", len(token)) + token))
                opcode, body = read_frame(sock)
                if opcode != OP_AUTH_SUCCESS:
                    raise ConnectionError(f"authentication answered opcode {opcode}")
            elif opcode != OP_READY:
                raise ConnectionError(f"STARTUP answered opcode {opcode}")
            query = long_string("SELECT release_version FROM system.local")
            query += struct.pack(">HB", 0x0001, 0)  # consistency ONE, no flags
            sock.sendall(frame(1, OP_QUERY, query))
            opcode, body = read_frame(sock)
            if opcode == OP_ERROR:
                raise ConnectionError("query answered an error")
            if opcode != OP_RESULT:
                raise ConnectionError(f"query answered opcode {opcode}")
            print(first_text_cell(body))
            return 0
    except (OSError, ValueError, struct.error) as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
