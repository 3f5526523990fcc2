// SPDX-License-Identifier: Apache-2.0
//! Opening a file a process maps, as that process sees it, without following
//! anything it controls out of its root.
//!
//! A container decides what its paths mean: `/usr/lib/libssl.so.3` inside it
//! may be a symlink to `/../../etc/shadow`, to `/proc/1/root/...`, or replaced
//! between two reads. So the path from `/proc/PID/maps` is resolved with
//! `openat2(2)` relative to `/proc/PID/root` with
//!
//! * `RESOLVE_IN_ROOT`: `/`, `..` and absolute symlinks stay inside that root,
//!   as if the loader were chrooted there;
//! * `RESOLVE_NO_MAGICLINKS`: no `/proc/*/fd/*`-style links, which could jump
//!   anywhere (`/proc` inside the root is the container's own);
//! * `O_NOFOLLOW` is not needed on top: a final symlink is resolved, in the root.
//!
//! and the opened file must then be the very file the process maps: its
//! device and inode must equal those in the maps line, or it is refused.
//! Executables are opened through `/proc/PID/exe`, which the kernel points at
//! the mapped file itself, and checked the same way.

use std::{fs::File, io, os::fd::OwnedFd, path::Path};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::maps::{makedev, FileId};

/// Why a mapped file could not be opened for instrumentation.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open `{path}` inside the process's root")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` inside the process's root is not the mapped file (dev/inode differ)")]
    Replaced { path: String },
}

/// Opens `path` (absolute, as the process sees it) inside `root` (a
/// directory fd, e.g. of `/proc/PID/root`), read-only, and checks that it is
/// the file `want`.
pub fn open_in_root(root: &File, path: &str, want: FileId) -> Result<File, OpenError> {
    let fd: OwnedFd = rustix::fs::openat2(
        root,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| OpenError::Open { path: path.to_owned(), source: e.into() })?;
    let file = File::from(fd);
    check_identity(&file, path, want)?;
    Ok(file)
}

/// Opens a directory to resolve in (`/proc/PID/root`).
pub fn open_root(dir: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

/// Opens `/proc/PID/exe` (a link the kernel keeps to the mapped executable)
/// and checks it is `want`.
pub fn open_exe(proc_pid: &Path, want: FileId) -> Result<File, OpenError> {
    let path = proc_pid.join("exe");
    let file =
        File::open(&path).map_err(|source| OpenError::Open { path: path.display().to_string(), source })?;
    check_identity(&file, "exe", want)?;
    Ok(file)
}

/// The identity of an open file.
pub fn identity(file: &File) -> io::Result<FileId> {
    let st = rustix::fs::fstat(file)?;
    #[allow(clippy::useless_conversion, reason = "st_dev/st_ino widths differ between targets")]
    let (dev, ino) = (u64::from(st.st_dev), u64::from(st.st_ino));
    Ok(FileId { dev: makedev(u64::from(rustix::fs::major(dev)), u64::from(rustix::fs::minor(dev))), ino })
}

fn check_identity(file: &File, path: &str, want: FileId) -> Result<(), OpenError> {
    let got = identity(file).map_err(|source| OpenError::Open { path: path.to_owned(), source })?;
    if got != want {
        return Err(OpenError::Replaced { path: path.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A fake container root with a library, and symlinks that try to leave.
    #[test]
    fn container_symlinks_cannot_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.so");
        std::fs::write(&secret, b"host file").unwrap();
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("usr/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libssl.so.3"), b"container libssl").unwrap();
        // Absolute, relative-upward and magic-link escapes.
        symlink(&secret, lib.join("abs.so")).unwrap();
        symlink("../../../../../../../..".to_owned() + secret.to_str().unwrap(), lib.join("up.so")).unwrap();
        symlink("/proc/self/root".to_owned() + secret.to_str().unwrap(), lib.join("magic.so")).unwrap();
        symlink("libssl.so.3", lib.join("libssl.so")).unwrap();

        let rootfd = open_root(root.path()).unwrap();
        let real = identity(&File::open(lib.join("libssl.so.3")).unwrap()).unwrap();
        let host = identity(&File::open(&secret).unwrap()).unwrap();

        // An in-root symlink is fine, and lands on the mapped file.
        let f = open_in_root(&rootfd, "/usr/lib/libssl.so", real).unwrap();
        assert_eq!(identity(&f).unwrap(), real);
        // The absolute and `..` escapes resolve inside the root, where the
        // target does not exist.
        for p in ["/usr/lib/abs.so", "/usr/lib/up.so"] {
            let e = open_in_root(&rootfd, p, host).unwrap_err();
            assert!(
                matches!(&e, OpenError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound),
                "{p}: {e:?}"
            );
        }
        // /proc inside the root does not exist here; even where it does,
        // RESOLVE_NO_MAGICLINKS refuses /proc/*/root and /proc/*/fd/*.
        assert!(open_in_root(&rootfd, "/usr/lib/magic.so", host).is_err());
        let procfd = open_root(Path::new("/")).unwrap();
        let e = open_in_root(&procfd, &("/proc/self/root".to_owned() + secret.to_str().unwrap()), host)
            .unwrap_err();
        assert!(
            matches!(&e, OpenError::Open { source, .. } if source.raw_os_error() == Some(40)),
            "ELOOP: {e:?}"
        );
        // The right path but another file (replaced since it was mapped): refused.
        std::fs::write(root.path().join("other.so"), b"x").unwrap();
        assert!(matches!(open_in_root(&rootfd, "/other.so", real), Err(OpenError::Replaced { .. })));
    }
}
