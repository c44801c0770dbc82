"""A seccomp filter, compiled by libseccomp, that stops a sandboxed program from creating processes.

bubblewrap loads it (`--seccomp FD`) just before it starts the interpreter. Process creation is refused
outright rather than counted: RLIMIT_NPROC does not bind a process whose user namespace maps it to root
(as when training runs as root, e.g. in CI), so a fork bomb is stopped here instead. Threads stay allowed
(`clone` with CLONE_THREAD); `clone3` answers ENOSYS so the C library falls back to `clone`, whose flags
the filter can read. A few kernel interfaces a test solution never needs, and that sandbox escapes use,
are refused too. Syscalls of another ABI (i386 on x86_64) kill the process (libseccomp's default).

We call libseccomp through ctypes: it is the library bubblewrap's own documentation points to, it knows
every architecture's syscall numbers, and Debian ships it with apt itself (libseccomp2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import tempfile

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7
_CLONE_THREAD = 0x00010000

# Refused with EPERM: process creation (clone without CLONE_THREAD is handled separately) and interfaces
# that reach outside the sandbox or into the kernel.
_REFUSED = (
    "fork", "vfork", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns",
    "mount", "umount2", "pivot_root", "chroot", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "userfaultfd", "io_uring_setup", "kexec_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "syslog", "acct", "quotactl", "name_to_handle_at", "open_by_handle_at",
)  # fmt: skip


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def no_new_processes_filter() -> bytes | None:
    """The compiled BPF program (bytes for bwrap's --seccomp), or None when libseccomp is not installed."""
    path = ctypes.util.find_library("seccomp")
    if path is None:
        return None
    lib = ctypes.CDLL(path, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]

    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:

        def add(name: str, action: int, *conditions: _ArgCmp) -> None:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # not a syscall on this architecture (e.g. fork on arm64): nothing to refuse
                return
            array = (_ArgCmp * len(conditions))(*conditions) if conditions else None
            rc = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
            if rc < 0:
                raise OSError(-rc, f"seccomp_rule_add({name}) failed: {os.strerror(-rc)}")

        for name in _REFUSED:
            add(name, _errno_action(errno.EPERM))
        # clone(flags, ...) without CLONE_THREAD makes a process: (flags & CLONE_THREAD) == 0 -> EPERM.
        add("clone", _errno_action(errno.EPERM), _ArgCmp(0, _SCMP_CMP_MASKED_EQ, _CLONE_THREAD, 0))
        add("clone3", _errno_action(errno.ENOSYS))
        with tempfile.TemporaryFile() as out:
            rc = lib.seccomp_export_bpf(ctx, out.fileno())
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            out.seek(0)
            return out.read()
    finally:
        lib.seccomp_release(ctx)
