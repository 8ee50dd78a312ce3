"""Runs a modern ClickHouse server (25.8) out of chDB's Python wheel.

Debian ships only ClickHouse 18.16 and ClickHouse's own package hosts are out of reach here, but
chDB's wheel (PyPI, Apache-2.0) links the whole ClickHouse program, server included. This calls
its server entry point with our arguments, exactly as `clickhouse server ARGS` would.

    python3 clickhouse-modern.py PATH/TO/_chdb.abi3.so [server arguments...]
"""

import ctypes
import sys


def main() -> int:
    library = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)
    args = [b"clickhouse-server"] + [a.encode() for a in sys.argv[2:]]
    argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    server = library._Z25mainEntryClickHouseServeriPPc  # mainEntryClickHouseServer(int, char**)
    server.restype = ctypes.c_int
    server.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    return server(len(args), argv)


if __name__ == "__main__":
    sys.exit(main())
