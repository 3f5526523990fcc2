#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Charges sampled addresses inside loaded BPF programs to their C source lines.

Reads `perf script -F ip,sym` output of `perf record -g` on stdin and charges
each sample to its frame nearest the leaf inside a BPF program (a sample in a
helper counts for the line that called it). The programs named on the command
line must be loaded: their JIT images (global functions included) and the
addresses of their source lines come from BPF_OBJ_GET_INFO_BY_FD (jited ksyms
and line info), the line texts from the program's BTF. Needs root. bpftool
cannot do this here: its JIT disassembly needs libbfd, which Debian's bpftool
lacks.

    perf script -F ip,sym | scripts/bpf-lines.py nt_http_recv nt_http_sendmsg
"""
import collections
import ctypes
import json
import os
import re
import struct
import subprocess
import sys

SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
PROG_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, BTF_GET_FD_BY_ID = 13, 15, 19
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    ret = libc.syscall(SYS_BPF, cmd, buf, 128)
    if ret < 0:
        raise OSError(ctypes.get_errno(), f"bpf({cmd})")
    return ret, buf


def info(fd, size, fill=b""):
    """BPF_OBJ_GET_INFO_BY_FD into a `size`-byte struct prefilled with `fill`."""
    out = ctypes.create_string_buffer(fill.ljust(size, b"\0"), size)
    bpf(OBJ_GET_INFO_BY_FD, struct.pack("IIQ", fd, size, ctypes.addressof(out)))
    return out


def lines_of(prog_id):
    """The program's JIT images [(start, end)] (main program and global
    functions), and [(jited address, "file:line: source")], sorted."""
    fd, _ = bpf(PROG_GET_FD_BY_ID, struct.pack("III", prog_id, 0, 0))
    first = info(fd, 232).raw
    btf_id = struct.unpack_from("I", first, 128)[0]
    nr_line, nr_jited = struct.unpack_from("I", first, 148)[0], struct.unpack_from("I", first, 168)[0]
    line_rec = struct.unpack_from("I", first, 172)[0]
    nr_ksyms, nr_lens = struct.unpack_from("II", first, 104)
    if not nr_line or nr_line != nr_jited or not nr_ksyms or nr_ksyms != nr_lens:
        sys.exit(f"program {prog_id}: no jited line info (loaded without BTF line info?)")
    lines = ctypes.create_string_buffer(nr_line * line_rec)
    jited = ctypes.create_string_buffer(nr_jited * 8)
    ksyms = ctypes.create_string_buffer(nr_ksyms * 8)
    lens = ctypes.create_string_buffer(nr_lens * 4)
    req = bytearray(232)
    struct.pack_into("II", req, 104, nr_ksyms, nr_lens)
    struct.pack_into("QQ", req, 112, ctypes.addressof(ksyms), ctypes.addressof(lens))
    struct.pack_into("I", req, 148, nr_line)
    struct.pack_into("Q", req, 152, ctypes.addressof(lines))
    struct.pack_into("Q", req, 160, ctypes.addressof(jited))
    struct.pack_into("III", req, 168, nr_jited, line_rec, 8)
    info(fd, 232, bytes(req))
    os.close(fd)
    images = [
        (struct.unpack_from("Q", ksyms.raw, 8 * i)[0], struct.unpack_from("I", lens.raw, 4 * i)[0])
        for i in range(nr_ksyms)
    ]
    images = [(start, start + size) for start, size in images]
    # The program's BTF: its string section names files and holds the lines.
    bfd, _ = bpf(BTF_GET_FD_BY_ID, struct.pack("III", btf_id, 0, 0))
    size = struct.unpack_from("I", info(bfd, 32).raw, 8)[0]
    raw = ctypes.create_string_buffer(size)
    info(bfd, 32, struct.pack("QI", ctypes.addressof(raw), size))
    os.close(bfd)
    hdr_len, _, _, str_off, str_len = struct.unpack_from("IIIII", raw.raw, 4)
    strings = raw.raw[hdr_len + str_off : hdr_len + str_off + str_len]

    def s(off):
        return strings[off : strings.index(b"\0", off)].decode(errors="replace")

    out = []
    for i in range(nr_line):
        _, file_off, line_off, col = struct.unpack_from("IIII", lines.raw, i * line_rec)
        addr = struct.unpack_from("Q", jited.raw, i * 8)[0]
        out.append((addr, f"{os.path.basename(s(file_off))}:{col >> 10}: {s(line_off).strip()}"))
    return images, sorted(out)


def main():
    names = sys.argv[1:]
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, check=True).stdout)
    tables = {}
    for p in progs:
        if p.get("name") in names:
            tables[p["name"]] = lines_of(p["id"])
    if set(tables) != set(names):
        sys.exit(f"not loaded: {sorted(set(names) - set(tables))}")
    hits = collections.Counter()
    total = 0
    for sample in sys.stdin.read().split("\n\n"):
        # The frame nearest the leaf inside a BPF program: a sample in a
        # helper counts for the line that called it.
        m = re.search(r"^\s*([0-9a-f]+) bpf_prog_\w+", sample, re.M)
        if not m:
            continue
        ip = int(m.group(1), 16)
        for name, (images, table) in tables.items():
            if not any(start <= ip < end for start, end in images):
                continue
            # The last line starting at or before the address.
            lo, hi = 0, len(table)
            while lo < hi:
                mid = (lo + hi) // 2
                if table[mid][0] <= ip:
                    lo = mid + 1
                else:
                    hi = mid
            if lo:
                hits[(name, table[lo - 1][1])] += 1
                total += 1
                break
    for (name, src), n in hits.most_common(40):
        print(f"{100 * n / max(total, 1):5.1f}%  {name}  {src}")


if __name__ == "__main__":
    main()
