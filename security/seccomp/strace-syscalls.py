#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Prints the syscalls the loader made in `strace -f -qq -o TRACE` logs, one
name a line, sorted (the union over every TRACE given).

    strace-syscalls.py check.trace run.trace

Counts a process only from its execve of a `nettel-loader` binary on (so the
wrappers before it, setpriv or run-confined, are not counted), and every thread
or child it clones after that (all of whose lines count: strace can log a new
thread's first calls before its parent's clone returns). A call that strace
split in two (`<unfinished ...>`, then `<... NAME resumed>`) counts once. Fails when no
execve of the loader is in a trace, rather than print an empty list.

Used by tests/tests/seccomp_profile.rs and for deriving
security/seccomp/loader.json by hand (security/README.md).
"""
import re
import sys

# `PID NAME(` or `PID <... NAME resumed>`.
CALL = re.compile(r"(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)(.*)")
LOADER_EXEC = re.compile(r'"[^"]*/nettel-loader"')
# The new task's id: clone/fork return it, clone3 also shows it in parent_tid.
CHILD = re.compile(r"(?:parent_tid=\[(\d+)\]|= (\d+)$)")


def syscalls(path: str) -> set:
    calls = []  # (line index, pid, name)
    start = {}  # pid -> line index its loader calls start at
    clones = []  # (line index, parent pid, child pid)
    for i, line in enumerate(open(path)):
        m = CALL.match(line)
        if not m:
            continue
        pid, name, rest = m.groups()
        calls.append((i, pid, name))
        rest = rest.rstrip()
        if name == "execve" and LOADER_EXEC.match(rest) and rest.endswith("= 0"):
            start.setdefault(pid, i)
        if name in ("clone", "clone3", "fork", "vfork"):
            child = CHILD.search(rest)
            if child:
                clones.append((i, pid, child.group(1) or child.group(2)))
    if not start:
        sys.exit(f"strace-syscalls.py: {path}: no successful execve of nettel-loader")
    # A new task's first calls can be logged before its parent's clone returns.
    grew = True
    while grew:
        grew = False
        for i, parent, child in clones:
            if parent in start and i >= start[parent] and child not in start:
                start[child] = 0
                grew = True
    return {name for i, pid, name in calls if pid in start and i >= start[pid]}


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: strace-syscalls.py TRACE...")
    calls = set()
    for path in sys.argv[1:]:
        calls |= syscalls(path)
    print("\n".join(sorted(calls)))


if __name__ == "__main__":
    main()
