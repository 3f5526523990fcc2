// SPDX-License-Identifier: Apache-2.0
//! OpenSSL's internal read and write functions, found through the exported
//! wrappers that call them, so that the uprobes can sit where the kernel
//! does not single-step.
//!
//! A uprobe replaces the probed instruction with `int3` and must then run
//! the original instruction. x86 uprobes emulate branches, calls, `nop`
//! and, on recent kernels (6.18 here, measured below), `push`; any other
//! instruction is copied out of line and single-stepped, which takes a
//! second trap (`#DB`). OpenSSL 1.1.1 to 3.5 build `SSL_read`,
//! `SSL_read_ex`, `SSL_write` and `SSL_write_ex` as thin wrappers that open
//! with `sub $N,%rsp` and call `ssl_read_internal(s, buf, num, &bytes)` or
//! (1.1.1 to 3.1) `ssl_write_internal(s, buf, num, &bytes)`, each of which
//! opens with `push`. Measured here (Linux 6.18, this VM, a loop of
//! `SSL_write` with a tracefs uprobe): 5.3 µs per call with the probe on
//! `SSL_write`'s `sub`, 0.9 µs on the internal function's `push`; with a
//! return probe, 5.9 against 1.6 µs. The internal functions have the `_ex`
//! calling convention (1 on success, the byte count through the fourth
//! argument), so the `_ex` programs serve them unchanged, and one pair of
//! probes covers both wrappers.
//!
//! OpenSSL >= 3.2 exports `SSL_write_ex2`: `SSL_write_ex` jumps to it, it
//! and `SSL_write` call `ssl_write_internal(s, buf, num, flags, &bytes)`,
//! whose byte count is the fifth argument ([`Internal::write_flags`], served
//! by `nt_tls_entx5`); there the write pair is `SSL_write` and
//! `SSL_write_ex2`. OpenSSL 3.5's wrappers have the same shape as 3.0's.
//!
//! The internal functions are not exported; they are found by decoding each
//! wrapper up to its first call. The decoder knows only the instructions
//! such a wrapper is made of and gives up at anything else, and every
//! condition of [`find`] must hold, or the exported functions are probed as
//! before. Not taken: builds whose wrappers already open with an
//! instruction the kernel emulates (Node's statically linked OpenSSL opens
//! with `push %rbp`). A kernel that does not emulate `push` single-steps the
//! internal functions as it did the wrappers: no worse.

/// How far into a wrapper its call to the internal function may be.
pub const WRAPPER_BYTES: usize = 64;

/// File offsets of the internal read and write functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Internal {
    pub read: u64,
    pub write: u64,
    /// `ssl_write_internal` takes a flags argument before the byte count
    /// (OpenSSL >= 3.2).
    pub write_flags: bool,
}

/// The code of the four wrappers and where it is, for [`find`].
pub struct Wrappers<'a> {
    /// (file offset, the first [`WRAPPER_BYTES`] bytes there or fewer at
    /// the end of the section) of `SSL_read`, `SSL_read_ex`, `SSL_write`,
    /// and `SSL_write_ex` or, with `write_flags`, `SSL_write_ex2`.
    pub code: [(u64, &'a [u8]); 4],
    /// The library exports `SSL_write_ex2` (OpenSSL >= 3.2).
    pub write_flags: bool,
}

/// The internal functions the wrappers call, when all of these hold: the
/// file is x86_64 code (checked by the caller), no wrapper opens with an
/// instruction the kernel emulates, each wrapper reaches a `call` through
/// instructions [`first_call`] knows without writing `%rdi` or `%rsi` (the
/// SSL object and the buffer pass through unchanged), both read wrappers call
/// one function and both write wrappers another, and each of the two opens
/// with a `push` (the emulated instruction this is for). `entry_of` reads the
/// first bytes at a file offset, `None` outside the wrappers' section.
pub fn find(w: &Wrappers, entry_of: impl Fn(u64) -> Option<[u8; 2]>) -> Option<Internal> {
    if w.code.iter().any(|(_, code)| opens_emulated(code)) {
        return None;
    }
    let mut targets = [0u64; 4];
    for (t, (off, code)) in targets.iter_mut().zip(w.code) {
        let (at, rel) = first_call(code)?;
        *t = off.checked_add(at as u64 + 5)?.checked_add_signed(i64::from(rel))?;
    }
    let [read, read_ex, write, write_ex] = targets;
    if read != read_ex || write != write_ex || read == write {
        return None;
    }
    let opens_with_push = |off| entry_of(off).is_some_and(|b| opens_emulated(&b));
    (opens_with_push(read) && opens_with_push(write)).then_some(Internal {
        read,
        write,
        write_flags: w.write_flags,
    })
}

/// Whether `code` opens with `push` of a general register (`50+r`, or
/// `41 50+r` for `%r8`-`%r15`), which x86 uprobes emulate.
fn opens_emulated(code: &[u8]) -> bool {
    matches!(code, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..])
}

const RDI: u8 = 7;
const RSI: u8 = 6;

/// Bytes of a ModRM operand (the ModRM byte, a SIB byte, a displacement)
/// starting at `code[0]`, and the ModRM byte; `None` if `code` is too short.
fn modrm(code: &[u8]) -> Option<(usize, u8)> {
    let m = *code.first()?;
    let (md, rm) = (m >> 6, m & 7);
    let mut n = 1;
    if md != 3 {
        if rm == 4 {
            let sib = *code.get(1)?;
            n += 1;
            if md == 0 && sib & 7 == 5 {
                n += 4;
            }
        } else if md == 0 && rm == 5 {
            n += 4; // %rip-relative
        }
        n += match md {
            1 => 1,
            2 => 4,
            _ => 0,
        };
    }
    (code.len() >= n).then_some((n, m))
}

/// The offset of the first `call rel32` in `code` and its displacement,
/// decoding from `code[0]` one instruction at a time. Gives up (`None`) at
/// an instruction it does not know, at one that writes `%rdi` or `%rsi`, or
/// at the end of `code`. Known: `endbr64`; `push`; `jcc` (the fall-through
/// is followed); `mov`, `movslq`, `lea`, `xor`, `sub`, `add`, `cmp`, `test`
/// with a ModRM operand; `sub`/`add`/`cmp`/`and`/`or` with an immediate;
/// `mov` of an immediate to a register; an `%fs` prefix (the stack canary's
/// load).
pub fn first_call(code: &[u8]) -> Option<(usize, i32)> {
    let mut pos = 0;
    while pos < code.len() {
        let start = pos;
        if code[pos..].starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            pos += 4; // endbr64
            continue;
        }
        let fs = code[pos] == 0x64;
        pos += usize::from(fs);
        let rex = match *code.get(pos)? {
            r @ 0x40..=0x4f => {
                pos += 1;
                r
            }
            _ => 0,
        };
        let (rex_w, rex_r, rex_b) = (rex & 8 != 0, ((rex >> 2) & 1) << 3, (rex & 1) << 3);
        let op = *code.get(pos)?;
        pos += 1;
        // The register an instruction writes, where it writes one.
        let written: Option<u8> = match op {
            0xe8 if pos == start + 1 => {
                let rel = i32::from_le_bytes(code.get(pos..pos + 4)?.try_into().ok()?);
                return Some((start, rel));
            }
            0x50..=0x57 => None,
            0x70..=0x7f => {
                pos += 1;
                None
            }
            0x0f => {
                let op2 = *code.get(pos)?;
                if !(0x80..=0x8f).contains(&op2) {
                    return None;
                }
                pos += 5; // jcc rel32
                None
            }
            // r/m <- reg: mov, xor, sub, add; test and cmp write nothing.
            0x89 | 0x31 | 0x29 | 0x01 | 0x85 | 0x39 => {
                let (n, m) = modrm(code.get(pos..)?)?;
                pos += n;
                let reads_only = matches!(op, 0x85 | 0x39);
                (m >> 6 == 3 && !reads_only).then_some((m & 7) | rex_b)
            }
            // reg <- r/m: mov, movslq, lea, xor, sub, add.
            0x8b | 0x63 | 0x8d | 0x33 | 0x2b | 0x03 => {
                let (n, m) = modrm(code.get(pos..)?)?;
                pos += n;
                Some(((m >> 3) & 7) | rex_r)
            }
            // r/m op= imm8 / imm32: add, or, and, sub, cmp (/7 writes nothing).
            0x83 | 0x81 => {
                let (n, m) = modrm(code.get(pos..)?)?;
                if !matches!((m >> 3) & 7, 0 | 1 | 4 | 5 | 7) {
                    return None;
                }
                pos += n + if op == 0x83 { 1 } else { 4 };
                (m >> 6 == 3 && (m >> 3) & 7 != 7).then_some((m & 7) | rex_b)
            }
            0xb8..=0xbf => {
                pos += if rex_w { 8 } else { 4 };
                Some((op - 0xb8) | rex_b)
            }
            _ => return None,
        };
        if matches!(written, Some(RDI | RSI)) {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // The wrappers of Debian 12's OpenSSL 3.0.19 libssl.so.3 (objdump -d),
    // up to and including their call.
    const SSL_READ_3_0: &[u8] = &[
        0x48, 0x83, 0xec, 0x18, // sub $0x18,%rsp
        0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00, // mov %fs:0x28,%rax
        0x48, 0x89, 0x44, 0x24, 0x08, // mov %rax,0x8(%rsp)
        0x31, 0xc0, // xor %eax,%eax
        0x85, 0xd2, // test %edx,%edx
        0x78, 0x2f, // js
        0x48, 0x89, 0xe1, // mov %rsp,%rcx
        0x48, 0x63, 0xd2, // movslq %edx,%rdx
        0xe8, 0x3d, 0xfe, 0xff, 0xff, // call -0x1c3
        0x85, 0xc0, // test %eax,%eax
    ];
    const SSL_READ_EX_3_0: &[u8] = &[0x48, 0x83, 0xec, 0x08, 0xe8, 0xc7, 0xfd, 0xff, 0xff, 0x31, 0xd2];
    // OpenSSL 1.1.1's SSL_read: a lea instead of the canary.
    const SSL_READ_1_1: &[u8] = &[
        0x48, 0x83, 0xec, 0x18, 0x85, 0xd2, 0x78, 0x19, 0x48, 0x8d, 0x4c, 0x24, 0x08, 0x48, 0x63, 0xd2, 0xe8,
        0x9b, 0xfe, 0xff, 0xff,
    ];

    #[test]
    fn finds_the_call_of_each_openssl_wrapper_shape() {
        assert_eq!(first_call(SSL_READ_3_0), Some((30, -0x1c3)));
        assert_eq!(first_call(SSL_READ_EX_3_0), Some((4, -0x239)));
        assert_eq!(first_call(SSL_READ_1_1), Some((16, -0x165)));
        let endbr: Vec<u8> = [&[0xf3, 0x0f, 0x1e, 0xfa][..], SSL_READ_EX_3_0].concat();
        assert_eq!(first_call(&endbr), Some((8, -0x239)));
    }

    #[test]
    fn gives_up_at_unknown_instructions_writes_to_the_arguments_and_the_end() {
        // ret before any call
        assert_eq!(first_call(&[0x48, 0x83, 0xec, 0x08, 0xc3, 0xe8, 0, 0, 0, 0]), None);
        // mov %rdi,%rsi (the buffer argument replaced)
        assert_eq!(first_call(&[0x48, 0x89, 0xfe, 0xe8, 0, 0, 0, 0]), None);
        // mov (%rdi),%rdi
        assert_eq!(first_call(&[0x48, 0x8b, 0x3f, 0xe8, 0, 0, 0, 0]), None);
        // mov $1,%esi
        assert_eq!(first_call(&[0xbe, 1, 0, 0, 0, 0xe8, 0, 0, 0, 0]), None);
        // xor %edi,%edi
        assert_eq!(first_call(&[0x31, 0xff, 0xe8, 0, 0, 0, 0]), None);
        // a call cut off by the end of the bytes read
        assert_eq!(first_call(&SSL_READ_3_0[..33]), None);
        // a prefixed e8 is no plain call
        assert_eq!(first_call(&[0x48, 0xe8, 0, 0, 0, 0]), None);
        // but writes to other registers and test/cmp of the arguments are fine
        assert_eq!(
            first_call(&[0x85, 0xff, 0x48, 0x39, 0xf7, 0xb8, 1, 0, 0, 0, 0xe8, 1, 0, 0, 0]),
            Some((10, 1))
        );
    }

    /// The bytes come from files any container can ship: no input panics, and
    /// a call found lies within the bytes.
    #[test]
    fn any_bytes_decode_without_panicking() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut code = [0u8; WRAPPER_BYTES];
        for _ in 0..200_000 {
            for b in code.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly the opcodes the decoder knows, so that it goes deep.
                *b = match x % 4 {
                    0 => [0x48, 0x89, 0x8b, 0x83, 0xe8, 0x64, 0x0f, 0x74][(x >> 8) as usize % 8],
                    _ => (x >> 16) as u8,
                };
            }
            let len = (x >> 32) as usize % (WRAPPER_BYTES + 1);
            if let Some((at, _)) = first_call(&code[..len]) {
                assert!(at + 5 <= len && code[at] == 0xe8);
            }
        }
    }

    /// The four wrappers as if at these offsets, each calling `targets[i]`.
    fn wrappers(offsets: [u64; 4], targets: [u64; 4]) -> Vec<Vec<u8>> {
        offsets
            .iter()
            .zip(targets)
            .map(|(&off, t)| {
                let rel = (t as i64 - (off as i64 + 4 + 5)) as i32;
                [&[0x48, 0x83, 0xec, 0x08, 0xe8][..], &rel.to_le_bytes()].concat()
            })
            .collect()
    }

    fn find_in(
        code: &[Vec<u8>],
        offsets: [u64; 4],
        entry: impl Fn(u64) -> Option<[u8; 2]>,
    ) -> Option<Internal> {
        let w = Wrappers { code: [0, 1, 2, 3].map(|i| (offsets[i], code[i].as_slice())), write_flags: false };
        find(&w, entry)
    }

    #[test]
    fn the_internal_functions_are_taken_only_when_every_condition_holds() {
        let offsets = [0x5000, 0x5100, 0x5200, 0x5300];
        let push = |_| Some([0x41, 0x55]);
        let good = wrappers(offsets, [0x4000, 0x4000, 0x4800, 0x4800]);
        assert_eq!(
            find_in(&good, offsets, push),
            Some(Internal { read: 0x4000, write: 0x4800, write_flags: false })
        );
        // OpenSSL >= 3.2 (the caller passes SSL_write_ex2 for SSL_write_ex).
        let w = Wrappers { code: [0, 1, 2, 3].map(|i| (offsets[i], good[i].as_slice())), write_flags: true };
        assert_eq!(find(&w, push).map(|i| i.write_flags), Some(true));
        // The read wrappers disagree.
        let split = wrappers(offsets, [0x4000, 0x4100, 0x4800, 0x4800]);
        assert_eq!(find_in(&split, offsets, push), None);
        // Reads and writes call the same function.
        let same = wrappers(offsets, [0x4000, 0x4000, 0x4000, 0x4000]);
        assert_eq!(find_in(&same, offsets, push), None);
        // The internal function opens with an instruction that single-steps.
        assert_eq!(find_in(&good, offsets, |_| Some([0x48, 0x83])), None);
        // The internal function lies outside the section.
        assert_eq!(find_in(&good, offsets, |_| None), None);
        // A wrapper already opens with push: the wrappers stay.
        let mut pushed = good.clone();
        pushed[2].insert(0, 0x55);
        assert_eq!(find_in(&pushed, offsets, push), None);
        // A wrapper whose call was not found.
        let mut cut = good;
        cut[3].truncate(6);
        assert_eq!(find_in(&cut, offsets, push), None);
    }
}
