// SPDX-License-Identifier: Apache-2.0
//! Thin, safe wrappers over the system facts the loader needs: capabilities,
//! filesystem magic numbers, mounts, the kernel release and mapped BPF maps
//! (the ring buffer's reader, [`RingReader`]).
//! Everything goes through `rustix` or `/proc`; the loader's only `unsafe`
//! is here, each block with its justification.

use std::{fs, io, path::Path};

mod ring;
pub use ring::RingReader;

/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `TRACEFS_MAGIC`.
pub const TRACEFS_MAGIC: i64 = 0x7472_6163;

/// Linux capability numbers used by the loader (`include/uapi/linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cap {
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl Cap {
    /// The name used by `capsh` and Kubernetes (without the `CAP_` prefix).
    pub fn name(self) -> &'static str {
        match self {
            Self::SysAdmin => "SYS_ADMIN",
            Self::Perfmon => "PERFMON",
            Self::Bpf => "BPF",
        }
    }
}

/// The effective capability set of this process, from `/proc/self/status`.
pub fn effective_caps() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    parse_cap_line(&status, "CapEff:")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no CapEff in /proc/self/status"))
}

/// Parses a `CapXxx:\t000001ffffffffff` line.
pub fn parse_cap_line(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether `caps` contains `cap`.
pub fn has_cap(caps: u64, cap: Cap) -> bool {
    caps & (1 << cap as u8) != 0
}

/// The filesystem magic of the filesystem holding `path`.
pub fn fs_magic(path: &Path) -> io::Result<i64> {
    let st = rustix::fs::statfs(path)?;
    #[allow(clippy::unnecessary_cast, reason = "f_type's width differs between targets")]
    Ok(st.f_type as i64)
}

/// Mounts a pseudo filesystem (`bpf`, `tracefs`) at `target`.
pub fn mount_pseudo(fstype: &str, target: &Path) -> io::Result<()> {
    fs::create_dir_all(target)?;
    rustix::mount::mount(fstype, target, fstype, rustix::mount::MountFlags::empty(), None)?;
    Ok(())
}

/// The running kernel's release string, e.g. `6.18.44-fc-v782`.
pub fn kernel_release() -> String {
    rustix::system::uname().release().to_string_lossy().into_owned()
}

/// `(major, minor, patch)` of a release string; missing parts are 0.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32, u32)> {
    let mut parts =
        release.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Registers the ring buffer with tokio's reactor for read readiness.
pub fn register_ring_buffer(rb: RingReader) -> io::Result<tokio::io::unix::AsyncFd<RingReader>> {
    // SAFETY: `RingReader` owns its map fd (through `MapData`) and never
    // replaces it, so the fd stays open and identical for as long as the
    // `AsyncFd` owns the reader, which is what `register_with_interest`
    // requires.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// A read-only shared mapping of a `BPF_F_MMAPABLE` array map's values, seen
/// as 64-bit words that BPF programs update concurrently.
///
/// Reading through the mapping needs no syscall. A `bpf(BPF_MAP_LOOKUP_ELEM)`
/// runs under `bpf_disable_instrumentation()`, and every uprobe or classic
/// tracepoint program that fires on that CPU meanwhile is skipped.
pub struct MappedWords {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    words: usize,
    len: usize,
}

// SAFETY: the mapping is only ever read through `&[AtomicU64]`, which is
// `Send` and `Sync`; nothing in it is tied to the mapping thread.
unsafe impl Send for MappedWords {}
// SAFETY: as above.
unsafe impl Sync for MappedWords {}

impl MappedWords {
    /// Maps the first `bytes` bytes (a multiple of 8) of the
    /// `BPF_F_MMAPABLE` array map `fd`: its values.
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> io::Result<Self> {
        use rustix::mm::{MapFlags, ProtFlags};
        if bytes == 0 || !bytes.is_multiple_of(8) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mapping size must be a non-zero multiple of 8",
            ));
        }
        let len = bytes.next_multiple_of(rustix::param::page_size());
        // SAFETY: a fresh mapping at an address the kernel picks cannot
        // alias any Rust object. The kernel maps a BPF_F_MMAPABLE array's
        // values from offset 0, page-aligned, `round_up(value_size, 8)` bytes
        // apart, and refuses a length beyond them (EINVAL): on success all
        // `len` bytes are readable until `munmap` in `Drop`.
        let ptr =
            unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, fd, 0) }?;
        let ptr = std::ptr::NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, words: bytes / 8, len })
    }

    /// The mapped words. BPF programs write them concurrently (atomic adds,
    /// plain stores), hence atomics; a load of one word is never torn.
    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: `ptr` is page-aligned (so aligned for AtomicU64) and the
        // first `words * 8 <= len` bytes are mapped readable for `self`'s
        // lifetime. Other writers (BPF programs) are not Rust borrows, and
        // this mapping is only loaded, so treating the words as atomics is
        // sound.
        // Atomic loads from read-only memory are allowed for sizes up to 8
        // bytes on the targets the loader supports (std::sync::atomic docs).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, and no
        // borrow of `words()` outlives `self`.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) } {
            tracing::warn!(error = %e, "Failed to unmap a BPF map.");
        }
    }
}

impl std::fmt::Debug for MappedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedWords").field("words", &self.words).finish()
    }
}

/// `BPF_OBJ_GET`: a new descriptor for the BPF object pinned at `path`.
/// aya has no call that returns a pinned program's descriptor without
/// reading its BTF by id (`BPF_BTF_GET_FD_BY_ID` needs CAP_SYS_ADMIN), and
/// rustix does not wrap bpf(2).
pub fn bpf_obj_get(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd, unix::ffi::OsStrExt};
    const BPF_OBJ_GET: libc::c_long = 7;
    /// The `BPF_OBJ_GET` member of `union bpf_attr` (include/uapi/linux/bpf.h).
    #[repr(C)]
    #[derive(Default)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let attr = ObjGetAttr { pathname: c_path.as_ptr() as u64, ..Default::default() };
    // SAFETY: `attr` is a valid, initialised `BPF_OBJ_GET` attribute whose
    // `pathname` points at a NUL-terminated string that outlives the call;
    // the kernel reads `size_of::<ObjGetAttr>()` bytes of it and writes
    // nothing back. The call returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr as *const ObjGetAttr, size_of::<ObjGetAttr>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf(BPF_OBJ_GET) returned an invalid fd"))?;
    // SAFETY: the kernel just returned `fd`, a descriptor nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The `recursion_misses` of the BPF program `fd` (its fdinfo, Linux >=
/// 5.12): runs the kernel skipped. `None` on a kernel without the line.
pub fn prog_recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    Ok(parse_fdinfo_field(&fdinfo(fd.as_raw_fd())?, "recursion_misses:"))
}

/// The number after `key` on its line of an fdinfo text.
fn parse_fdinfo_field(fdinfo: &str, key: &str) -> Option<u64> {
    fdinfo.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok())
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// This process's descriptors that are BPF links (`anon_inode:bpf-link`).
pub fn bpf_link_fds() -> io::Result<std::collections::BTreeSet<i32>> {
    let mut fds = std::collections::BTreeSet::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        // Descriptors close between the listing and the readlink (read_dir's own).
        let Ok(target) = fs::read_link(entry.path()) else { continue };
        if target.as_os_str() == "anon_inode:bpf-link" {
            if let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                fds.insert(fd);
            }
        }
    }
    Ok(fds)
}

/// `/proc/self/fdinfo/FD`: for a BPF link, `link_type`, `link_id`, `prog_tag`
/// and `prog_id` lines.
pub fn fdinfo(fd: i32) -> io::Result<String> {
    fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_capability_lines() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000000000\n";
        let eff = parse_cap_line(status, "CapEff:").unwrap();
        assert!(has_cap(eff, Cap::Bpf));
        assert!(has_cap(eff, Cap::Perfmon));
        assert!(!has_cap(eff, Cap::SysAdmin));
        assert_eq!(parse_cap_line("CapEff:\tzz", "CapEff:"), None);
    }

    #[test]
    fn reads_a_programs_recursion_misses() {
        let fdinfo = "pos:\t0\nprog_type:\t26\nprog_tag:\t4a7f1a3c1b2e9d00\nrun_time_ns:\t0\n\
                      run_cnt:\t0\nrecursion_misses:\t17\nverified_insns:\t912\n";
        assert_eq!(parse_fdinfo_field(fdinfo, "recursion_misses:"), Some(17));
        assert_eq!(parse_fdinfo_field("prog_type:\t26\n", "recursion_misses:"), None, "kernel < 5.12");
    }

    #[test]
    fn a_path_that_is_no_pin_is_the_kernels_error() {
        let e = bpf_obj_get(Path::new("/nonexistent/nettel-test")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(2), "{e}");
    }

    #[test]
    fn parses_kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v782"), Some((6, 18, 44)));
        assert_eq!(parse_kernel_version("5.8.0"), Some((5, 8, 0)));
        assert_eq!(parse_kernel_version("5.10"), Some((5, 10, 0)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }
}
