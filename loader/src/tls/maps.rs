// SPDX-License-Identifier: Apache-2.0
//! Parsing `/proc/PID/maps`: which files a process maps, by device and inode.
//! Pure functions, unit-tested; the I/O is in `discover`.

/// A file identity: the device and inode a mapping refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Device number (`makedev(major, minor)` as in `st_dev`).
    pub dev: u64,
    pub ino: u64,
}

/// One file-backed mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub id: FileId,
    /// The path as the process sees it (in its own mount namespace and root).
    pub path: String,
    /// The kernel appended ` (deleted)`: the file was unlinked or replaced.
    pub deleted: bool,
}

/// `makedev()` as glibc and the kernel's `new_encode_dev` define it.
pub fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | (minor & 0xff)
}

/// Parses one line of `/proc/PID/maps`; `None` for anonymous mappings and
/// anything malformed.
pub fn parse_line(line: &str) -> Option<Mapping> {
    // address perms offset dev inode pathname; the path may contain spaces.
    let mut rest = line;
    let mut fields = [""; 5];
    for f in &mut fields {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ')?;
        *f = &rest[..end];
        rest = &rest[end..];
    }
    let path = rest.trim_start_matches(' ');
    if !path.starts_with('/') {
        return None;
    }
    let (major, minor) = fields[3].split_once(':')?;
    let dev = makedev(u64::from_str_radix(major, 16).ok()?, u64::from_str_radix(minor, 16).ok()?);
    let ino = fields[4].parse().ok()?;
    if ino == 0 {
        return None;
    }
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    Some(Mapping { id: FileId { dev, ino }, path: path.to_owned(), deleted })
}

/// Every distinct file a maps listing names, in order of first appearance.
pub fn parse(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for m in text.lines().filter_map(parse_line) {
        if !out.iter().any(|o| o.id == m.id) {
            out.push(m);
        }
    }
    out
}

/// The TLS library a file name denotes, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// OpenSSL's (or a compatible) `libssl.so*`: instrumented.
    OpenSsl,
    /// GnuTLS, NSS, wolfSSL or mbed TLS: not instrumented.
    Other,
}

/// Classifies a mapped file by its base name.
pub fn library(path: &str) -> Option<Library> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let so = |stem: &str| name.strip_prefix(stem).is_some_and(|r| r.starts_with(".so") || r.starts_with('-'));
    if so("libssl") {
        Some(Library::OpenSsl)
    } else if ["libgnutls", "libnss3", "libssl3", "libwolfssl", "libmbedtls"].iter().any(|s| so(s)) {
        Some(Library::Other)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_mappings_and_skips_anonymous_ones() {
        let text = "\
55d0c0a00000-55d0c0a2c000 r--p 00000000 fd:01 1311  /usr/sbin/nginx
7f1c2e800000-7f1c2e81f000 r--p 00000000 08:01 4242                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2e81f000-7f1c2e87d000 r-xp 0001f000 08:01 4242                       /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2e900000-7f1c2e901000 rw-p 00000000 00:00 0
7ffd1c9e0000-7ffd1ca01000 rw-p 00000000 00:00 0                          [stack]
7f1c2ea00000-7f1c2ea01000 r--p 00000000 103:02 77 /opt/my app/lib ssl.so (deleted)
";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, "/usr/sbin/nginx");
        assert_eq!(m[0].id, FileId { dev: makedev(0xfd, 1), ino: 1311 });
        assert_eq!(m[1].path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(m[1].id.dev, 0x801);
        assert_eq!(
            m[2],
            Mapping {
                id: FileId { dev: makedev(0x103, 2), ino: 77 },
                path: "/opt/my app/lib ssl.so".into(),
                deleted: true
            }
        );
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line("a b c zz:01 5 /x"), None);
    }

    #[test]
    fn makedev_matches_the_kernel_encoding() {
        assert_eq!(makedev(8, 1), 0x801);
        assert_eq!(makedev(259, 2), 0x10302);
        assert_eq!(makedev(0, 300), 0x10_002c);
    }

    #[test]
    fn names_tls_libraries() {
        assert_eq!(library("/usr/lib/x86_64-linux-gnu/libssl.so.3"), Some(Library::OpenSsl));
        assert_eq!(library("/lib/libssl.so.1.1"), Some(Library::OpenSsl));
        assert_eq!(library("/usr/lib/libssl-abc123.so"), Some(Library::OpenSsl));
        assert_eq!(library("/usr/lib/libgnutls.so.30"), Some(Library::Other));
        assert_eq!(library("/usr/lib/libssl3.so"), Some(Library::Other), "NSS's libssl3");
        assert_eq!(library("/usr/lib/libcrypto.so.3"), None);
        assert_eq!(library("/usr/lib/libsslx.so"), None);
    }
}
