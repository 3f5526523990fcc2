// SPDX-License-Identifier: Apache-2.0
//! What an ELF file offers for TLS instrumentation: the file offsets of
//! OpenSSL's `SSL_read`/`SSL_write` family (dynamic or static symbol tables),
//! or, when they are missing, which TLS stack it carries that nettel cannot
//! instrument.
//!
//! A small streaming reader for 64-bit little-endian ELF (x86_64, arm64):
//! the file is never read whole (executables reach hundreds of MB) nor
//! mapped (a container truncating a mapped file would crash the loader with
//! SIGBUS). Symbol tables are read in blocks; a string table is held in
//! memory only up to [`MAX_STRTAB`]; sections are searched in blocks.

use std::{fs::File, io, os::unix::fs::FileExt};

use super::internal::{self, Internal, Wrappers, WRAPPER_BYTES};

/// The functions hooked, in the order of [`Offsets`], then `SSL_write_ex2`,
/// which only says that the library is OpenSSL >= 3.2 (see [`internal`]).
pub const SYMBOLS: [&str; 5] = ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex", "SSL_write_ex2"];

/// Largest string table read into memory (bigger `.strtab`s are skipped).
const MAX_STRTAB: u64 = 64 << 20;
/// Read block size.
const BLOCK: usize = 1 << 20;

/// File offsets (what a uprobe attaches at) of [`SYMBOLS`]; `SSL_read` and
/// `SSL_write` are always present, the `_ex` variants exist in OpenSSL >= 1.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub read: u64,
    pub write: u64,
    pub read_ex: Option<u64>,
    pub write_ex: Option<u64>,
    /// OpenSSL's internal read and write functions, probed instead of the
    /// four above where [`internal::find`] finds them.
    pub internal: Option<Internal>,
}

/// What a file is, for TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exports (or keeps in `.symtab`) OpenSSL/BoringSSL's functions.
    OpenSsl(Offsets),
    /// A Go executable with `crypto/tls` linked in.
    GoTls,
    /// Links rustls.
    Rustls,
    /// Carries OpenSSL or BoringSSL without the symbols (stripped, static).
    StrippedSsl,
    /// No TLS that nettel knows of (or not a 64-bit little-endian ELF).
    None,
}

#[derive(Debug, Clone, Copy)]
struct Section {
    name: u32,
    kind: u32,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
}

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const SHT_NOBITS: u32 = 8;
const STT_FUNC: u8 = 2;
const EM_X86_64: u16 = 62;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

fn read_exact_at(f: &File, len: u64, off: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| invalid("section too large"))?;
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

/// What [`sections`] reads of an ELF file.
struct Headers {
    secs: Vec<Section>,
    /// The section names' string table.
    names: Vec<u8>,
    /// `e_machine`.
    machine: u16,
}

/// Reads the section headers and the section names; `None` for anything but
/// a 64-bit LE ELF.
fn sections(f: &File) -> io::Result<Option<Headers>> {
    let mut h = [0u8; 64];
    if f.read_exact_at(&mut h, 0).is_err() || &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return Ok(None);
    }
    let (machine, shoff, shentsize, shnum, shstrndx) = (
        u16_at(&h, 0x12),
        u64_at(&h, 0x28),
        u16_at(&h, 0x3a) as usize,
        u16_at(&h, 0x3c) as usize,
        u16_at(&h, 0x3e) as usize,
    );
    if shentsize != 64 || shnum == 0 || shstrndx >= shnum {
        return Ok(None);
    }
    let raw = read_exact_at(f, (shnum * 64) as u64, shoff)?;
    let secs: Vec<Section> = raw
        .chunks_exact(64)
        .map(|s| Section {
            name: u32_at(s, 0),
            kind: u32_at(s, 4),
            addr: u64_at(s, 16),
            offset: u64_at(s, 24),
            size: u64_at(s, 32),
            link: u32_at(s, 40),
        })
        .collect();
    let names = &secs[shstrndx];
    let names =
        if names.size <= MAX_STRTAB { read_exact_at(f, names.size, names.offset)? } else { Vec::new() };
    Ok(Some(Headers { secs, names, machine }))
}

fn name_at(strtab: &[u8], off: u32) -> &[u8] {
    let s = strtab.get(off as usize..).unwrap_or_default();
    &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
}

/// Finds the hook offsets, or classifies what is there instead.
pub fn inspect(f: &File) -> io::Result<Kind> {
    let Some(Headers { secs, names, machine }) = sections(f)? else { return Ok(Kind::None) };
    let mut found = [None; SYMBOLS.len()];
    for table in secs.iter().filter(|s| s.kind == SHT_DYNSYM || s.kind == SHT_SYMTAB) {
        scan_symbols(f, &secs, table, &mut found)?;
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    if let (Some(read), Some(write)) = (found[0], found[1]) {
        let mut off = Offsets { read, write, read_ex: found[2], write_ex: found[3], internal: None };
        if machine == EM_X86_64 {
            off.internal = internal_functions(f, &secs, &off, found[4])?;
        }
        return Ok(Kind::OpenSsl(off));
    }
    let section =
        |n: &str| secs.iter().find(|s| name_at(&names, s.name) == n.as_bytes() && s.kind != SHT_NOBITS);
    // Go keeps function names in .gopclntab even when stripped.
    if let Some(s) = section(".gopclntab") {
        let tls = search(f, s, &[b"crypto/tls.(*Conn).Read"])?;
        return Ok(if tls { Kind::GoTls } else { Kind::None });
    }
    // Panic locations keep the crate path even in stripped Rust binaries;
    // OpenSSL and BoringSSL keep their version/name strings.
    if let Some(s) = section(".rodata") {
        if search(f, s, &[b"/rustls-", b"rustls::"])? {
            return Ok(Kind::Rustls);
        }
        if search(f, s, &[b"OpenSSL 1.", b"OpenSSL 3.", b"BoringSSL"])? {
            return Ok(Kind::StrippedSsl);
        }
    }
    Ok(Kind::None)
}

/// [`internal::find`] over the wrappers' code, read from the file section
/// that holds `SSL_read` (the internal functions must lie in it too).
/// `write_ex2`: the offset of `SSL_write_ex2` (OpenSSL >= 3.2), which then
/// stands for `SSL_write_ex`.
fn internal_functions(
    f: &File,
    secs: &[Section],
    off: &Offsets,
    write_ex2: Option<u64>,
) -> io::Result<Option<Internal>> {
    let (Some(read_ex), Some(write_ex)) = (off.read_ex, write_ex2.or(off.write_ex)) else { return Ok(None) };
    let holds = |s: &Section, at: u64| at.checked_sub(s.offset).is_some_and(|d| d < s.size);
    let Some(text) = secs.iter().find(|s| s.kind != SHT_NOBITS && holds(s, off.read)) else {
        return Ok(None);
    };
    let end = text.offset.saturating_add(text.size);
    let read_at = |at: u64, len: usize| -> io::Result<Option<Vec<u8>>> {
        if !holds(text, at) {
            return Ok(None);
        }
        read_exact_at(f, (end - at).min(len as u64), at).map(Some)
    };
    let mut code: Vec<(u64, Vec<u8>)> = Vec::with_capacity(4);
    for at in [off.read, read_ex, off.write, write_ex] {
        let Some(bytes) = read_at(at, WRAPPER_BYTES)? else { return Ok(None) };
        code.push((at, bytes));
    }
    let w = Wrappers {
        code: [0, 1, 2, 3].map(|i| (code[i].0, code[i].1.as_slice())),
        write_flags: write_ex2.is_some(),
    };
    // A target that cannot be read counts as not found: the wrappers stay.
    Ok(internal::find(&w, |t| read_at(t, 2).ok().flatten().and_then(|b| b.try_into().ok())))
}

/// Looks for defined functions named in [`SYMBOLS`] in one symbol table.
fn scan_symbols(
    f: &File,
    secs: &[Section],
    table: &Section,
    found: &mut [Option<u64>; SYMBOLS.len()],
) -> io::Result<()> {
    let Some(strs) = secs.get(table.link as usize) else { return Ok(()) };
    if strs.size > MAX_STRTAB {
        return Ok(());
    }
    let strtab = read_exact_at(f, strs.size, strs.offset)?;
    let mut buf = vec![0u8; BLOCK / 24 * 24];
    let mut pos = 0;
    while pos < table.size {
        let n = ((table.size - pos) as usize).min(buf.len()) / 24 * 24;
        if n == 0 {
            break;
        }
        f.read_exact_at(&mut buf[..n], table.offset + pos)?;
        pos += n as u64;
        for sym in buf[..n].chunks_exact(24) {
            let (info, shndx) = (sym[4], u16_at(sym, 6));
            if info & 0xf != STT_FUNC || shndx == 0 || shndx >= 0xff00 {
                continue;
            }
            let name = name_at(&strtab, u32_at(sym, 0));
            let Some(i) = SYMBOLS.iter().position(|s| s.as_bytes() == name) else { continue };
            if found[i].is_some() {
                continue;
            }
            let Some(sec) = secs.get(shndx as usize) else { continue };
            found[i] = u64_at(sym, 8).checked_sub(sec.addr).map(|d| d + sec.offset);
        }
    }
    Ok(())
}

/// Whether section `s` contains any of `needles`, read in blocks.
fn search(f: &File, s: &Section, needles: &[&[u8]]) -> io::Result<bool> {
    let overlap = needles.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut buf = vec![0u8; BLOCK + overlap];
    let mut pos = 0u64;
    let mut carried = 0usize;
    while pos < s.size {
        let n = ((s.size - pos) as usize).min(BLOCK);
        f.read_exact_at(&mut buf[carried..carried + n], s.offset + pos)?;
        pos += n as u64;
        let window = &buf[..carried + n];
        if needles.iter().any(|nd| memchr::memmem::find(window, nd).is_some()) {
            return Ok(true);
        }
        let keep = overlap.min(window.len());
        let start = window.len() - keep;
        buf.copy_within(start..start + keep, 0);
        carried = keep;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_openssl_hooks_in_the_system_libssl() {
        let Ok(f) = File::open("/usr/lib/x86_64-linux-gnu/libssl.so.3") else {
            eprintln!("no system libssl.so.3 here; skipping");
            return;
        };
        let Kind::OpenSsl(off) = inspect(&f).unwrap() else { panic!("libssl has SSL_read") };
        assert!(off.read_ex.is_some() && off.write_ex.is_some(), "OpenSSL 3 has the _ex variants");
        assert_ne!(off.read, off.write);
        // Debian's OpenSSL 3.0: thin wrappers around two internal functions
        // that open with push (internal.rs has their bytes).
        let inner = off.internal.expect("the internal read and write functions of OpenSSL 3.0");
        for (at, wrapper) in [(inner.read, off.read), (inner.write, off.write)] {
            let mut entry = [0u8; 2];
            f.read_exact_at(&mut entry, at).unwrap();
            assert!(matches!(entry, [0x41, 0x50..=0x57] | [0x50..=0x57, _]), "{at:#x}: {entry:x?}");
            assert_ne!(at, wrapper);
        }
        // The offset is where the function's code is in the file: an ENDBR64
        // (f3 0f 1e fa) on CET-enabled Debian builds, or at least not zeros.
        let mut code = [0u8; 4];
        f.read_exact_at(&mut code, off.read).unwrap();
        assert_ne!(code, [0; 4]);
    }

    /// OpenSSL 1.1.1 and 3.5 (scripts/setup fetches them) have the same thin
    /// wrappers as 3.0, 3.5 with the flags argument of `ssl_write_internal`;
    /// Node's statically linked OpenSSL inlines the internal functions and
    /// opens its wrappers with `push %rbp`, so they are probed as they are.
    #[test]
    fn openssl_1_1_and_3_5_probe_their_internal_functions_and_node_its_exported_ones() {
        let cases = [
            ("/opt/nettel-tools/openssl-1.1/libssl-3a880ada.so.1.1", Some(false)),
            ("/opt/nettel-tools/openssl-3.5/libssl-6a9b88ec.so.3", Some(true)),
            ("/usr/bin/node", None),
        ];
        for (path, write_flags) in cases {
            let Ok(f) = File::open(path) else {
                assert!(std::env::var_os("CI").is_none(), "{path} is missing: scripts/setup installs it");
                eprintln!("SKIPPED: {path} is missing (run scripts/setup)");
                continue;
            };
            let Kind::OpenSsl(off) = inspect(&f).unwrap() else { panic!("{path} exports SSL_read") };
            assert_eq!(off.internal.map(|i| i.write_flags), write_flags, "{path}: {off:x?}");
        }
    }

    #[test]
    fn this_rust_test_binary_is_not_openssl_and_not_elf_is_none() {
        let f = File::open(std::env::current_exe().unwrap()).unwrap();
        assert!(matches!(inspect(&f).unwrap(), Kind::None | Kind::Rustls));
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), b"#!/bin/sh\n").unwrap();
        assert_eq!(inspect(&File::open(t.path()).unwrap()).unwrap(), Kind::None);
    }

    #[test]
    fn searches_across_block_boundaries() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let mut data = vec![b'x'; BLOCK + 100];
        data[BLOCK - 3..BLOCK + 5].copy_from_slice(b"/rustls-");
        std::fs::write(t.path(), &data).unwrap();
        let f = File::open(t.path()).unwrap();
        let s = Section { name: 0, kind: 1, addr: 0, offset: 0, size: data.len() as u64, link: 0 };
        assert!(search(&f, &s, &[b"/rustls-"]).unwrap());
        assert!(!search(&f, &s, &[b"BoringSSL"]).unwrap());
    }
}
