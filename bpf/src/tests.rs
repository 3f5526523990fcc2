// SPDX-License-Identifier: Apache-2.0
//! Decoder table tests, and the check that the BPF target's layout of every
//! ABI struct (read from the BTF of `abi_check.bpf.o`) equals the Rust one.

use std::mem::{offset_of, size_of};

use crate::{abi, decode, DecodeError, Record};

static ABI_CHECK_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/abi_check.bpf.o"));

fn retransmit_record() -> abi::nt_tcp_retransmit_event {
    let mut ev = abi::nt_tcp_retransmit_event::default();
    ev.hdr.abi_version = abi::NT_ABI_VERSION as u16;
    ev.hdr.kind = abi::NT_EVENT_TCP_RETRANSMIT as u8;
    ev.hdr.len = size_of::<abi::nt_tcp_retransmit_event>() as u32;
    ev.family = 2;
    ev.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    ev.dport = 8080;
    ev.rtx_kind = abi::NT_RTX_DATA as u8;
    ev
}

fn bytes_of<T: aya::Pod>(v: &T) -> Vec<u8> {
    // SAFETY: `T: Pod` has no padding bytes left uninitialised in our ABI (all
    // padding is explicit fields), so viewing it as bytes reads initialised memory.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

#[test]
fn decodes_a_valid_retransmit() {
    let buf = bytes_of(&retransmit_record());
    let Record::TcpRetransmit(ev) = decode(&buf).expect("valid record") else {
        panic!("wrong kind");
    };
    assert_eq!(ev.dport, 8080);
    assert_eq!(&ev.daddr[..4], &[10, 0, 0, 2]);
}

#[test]
fn rejects_hostile_records() {
    let good = bytes_of(&retransmit_record());
    let full = good.len();

    assert_eq!(decode(&[]).unwrap_err(), DecodeError::Short { got: 0, need: 16 });
    assert_eq!(decode(&good[..10]).unwrap_err(), DecodeError::Short { got: 10, need: 16 });

    // Header claims the full length but the record is truncated.
    assert_eq!(decode(&good[..40]).unwrap_err(), DecodeError::LengthMismatch { hdr: full as u32, got: 40 });

    // Truncated with a consistent header: short for its kind.
    let mut short = good[..40].to_vec();
    short[4..8].copy_from_slice(&40u32.to_ne_bytes());
    assert_eq!(decode(&short).unwrap_err(), DecodeError::Short { got: 40, need: full });

    // Oversized with a consistent header.
    let mut big = good.clone();
    big.extend_from_slice(&[0; 8]);
    big[4..8].copy_from_slice(&((full + 8) as u32).to_ne_bytes());
    assert_eq!(decode(&big).unwrap_err(), DecodeError::Oversized { got: full + 8, want: full });

    let mut version = good.clone();
    version[0..2].copy_from_slice(&99u16.to_ne_bytes());
    assert_eq!(
        decode(&version).unwrap_err(),
        DecodeError::AbiVersion { got: 99, want: abi::NT_ABI_VERSION as u16 }
    );

    let mut family = good.clone();
    family[offset_of!(abi::nt_tcp_retransmit_event, family)] = 7;
    assert_eq!(decode(&family).unwrap_err(), DecodeError::UnknownFamily(7));

    let mut kind = good.clone();
    kind[2] = 200;
    assert_eq!(decode(&kind).unwrap_err(), DecodeError::UnknownKind(200));
}

fn http_record() -> abi::nt_http_event {
    let mut ev = abi::nt_http_event::default();
    ev.hdr.abi_version = abi::NT_ABI_VERSION as u16;
    ev.hdr.kind = abi::NT_EVENT_HTTP as u8;
    ev.hdr.len = size_of::<abi::nt_http_event>() as u32;
    ev.family = 10;
    ev.status = 200;
    ev
}

fn synthetic_record() -> abi::nt_synthetic_event {
    let mut ev = abi::nt_synthetic_event::default();
    ev.hdr.abi_version = abi::NT_ABI_VERSION as u16;
    ev.hdr.kind = abi::NT_EVENT_SYNTHETIC as u8;
    ev.hdr.len = size_of::<abi::nt_synthetic_event>() as u32;
    ev
}

fn set_len(buf: &mut [u8], len: usize) {
    buf[offset_of!(abi::nt_event_hdr, len)..][..4].copy_from_slice(&(len as u32).to_ne_bytes());
}

/// Every kind of record, every way of being wrong: each gives its own error.
#[test]
fn hostile_record_table_for_every_kind() {
    let hdr = size_of::<abi::nt_event_hdr>();
    let family_at = [
        Some(offset_of!(abi::nt_tcp_retransmit_event, family)),
        Some(offset_of!(abi::nt_http_event, family)),
        None,
    ];
    let goods = [bytes_of(&retransmit_record()), bytes_of(&http_record()), bytes_of(&synthetic_record())];
    for (good, family_at) in goods.iter().zip(family_at) {
        let full = good.len();
        assert!(decode(good).is_ok(), "the good record decodes");
        let mut cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
            ("zero-length", Vec::new(), DecodeError::Short { got: 0, need: hdr }),
            ("one byte", good[..1].to_vec(), DecodeError::Short { got: 1, need: hdr }),
            ("truncated header", good[..hdr - 1].to_vec(), DecodeError::Short { got: hdr - 1, need: hdr }),
            (
                "header only, claiming the full length",
                good[..hdr].to_vec(),
                DecodeError::LengthMismatch { hdr: full as u32, got: hdr },
            ),
            (
                "truncated body, claiming the full length",
                good[..full - 1].to_vec(),
                DecodeError::LengthMismatch { hdr: full as u32, got: full - 1 },
            ),
        ];
        let mut short = good[..full - 8].to_vec();
        set_len(&mut short, full - 8);
        cases.push((
            "truncated body, consistent header",
            short,
            DecodeError::Short { got: full - 8, need: full },
        ));
        let mut long = good.clone();
        long.extend_from_slice(&[0xaa; 64]);
        cases.push((
            "oversized, claiming the kind's length",
            long.clone(),
            DecodeError::LengthMismatch { hdr: full as u32, got: full + 64 },
        ));
        set_len(&mut long, full + 64);
        cases.push((
            "oversized, consistent header",
            long,
            DecodeError::Oversized { got: full + 64, want: full },
        ));
        let mut huge_len = good.clone();
        set_len(&mut huge_len, u32::MAX as usize);
        cases.push((
            "header length u32::MAX",
            huge_len,
            DecodeError::LengthMismatch { hdr: u32::MAX, got: full },
        ));
        for version in [0u16, abi::NT_ABI_VERSION as u16 + 1, u16::MAX] {
            let mut v = good.clone();
            v[..2].copy_from_slice(&version.to_ne_bytes());
            cases.push((
                "wrong ABI version",
                v,
                DecodeError::AbiVersion { got: version, want: abi::NT_ABI_VERSION as u16 },
            ));
        }
        for kind in [abi::NT_EVENT_UNSPEC as u8, 4, 255] {
            let mut k = good.clone();
            k[offset_of!(abi::nt_event_hdr, kind)] = kind;
            cases.push(("unknown kind", k, DecodeError::UnknownKind(kind)));
        }
        if let Some(at) = family_at {
            for family in [0u8, 1, 255] {
                let mut f = good.clone();
                f[at] = family;
                cases.push(("unknown family", f, DecodeError::UnknownFamily(family)));
            }
        }
        for (what, input, want) in cases {
            let got = decode(&input).expect_err(what);
            assert_eq!(got, want, "{what}");
            assert!(
                !got.to_string().is_empty() && !got.reason().is_empty(),
                "{what}: a clear error and reason"
            );
        }
    }
}

// === BTF layout check ===

/// Struct layouts from a BPF object's `.BTF` section: name -> (size, members).
fn btf_structs(obj: &[u8]) -> std::collections::HashMap<String, (u32, Vec<(String, u32)>)> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(obj).expect("abi_check.bpf.o is ELF");
    let btf = file.section_by_name(".BTF").expect(".BTF section").data().unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(btf[o..o + 4].try_into().unwrap());
    assert_eq!(u16::from_le_bytes([btf[0], btf[1]]), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(4) as usize;
    let (type_off, type_len) = (u32_at(8) as usize, u32_at(12) as usize);
    let str_off = u32_at(16) as usize;
    let strings = &btf[hdr_len + str_off..];
    let name = |off: u32| {
        let s = &strings[off as usize..];
        String::from_utf8_lossy(&s[..s.iter().position(|&b| b == 0).unwrap()]).into_owned()
    };
    let mut out = std::collections::HashMap::new();
    let (mut p, end) = (hdr_len + type_off, hdr_len + type_off + type_len);
    while p < end {
        let (name_off, info, size) = (u32_at(p), u32_at(p + 4), u32_at(p + 8));
        let (vlen, kind, kflag) = ((info & 0xffff) as usize, (info >> 24) & 0x1f, info >> 31);
        p += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 | 15 | 19 => vlen * 12,
            6 | 13 => vlen * 8,
            _ => 0,
        };
        if kind == 4 {
            let members = (0..vlen)
                .map(|i| {
                    let m = p + i * 12;
                    let off = u32_at(m + 8);
                    let bits = if kflag == 1 { off & 0xff_ffff } else { off };
                    (name(u32_at(m)), bits / 8)
                })
                .collect();
            out.insert(name(name_off), (size, members));
        }
        p += extra;
    }
    out
}

macro_rules! assert_layout {
    ($structs:expr, $ty:ident { $($field:ident),* $(,)? }) => {{
        let (size, members) = $structs.get(stringify!($ty)).expect(concat!(stringify!($ty), " in BTF"));
        assert_eq!(*size as usize, size_of::<abi::$ty>(), concat!("size of ", stringify!($ty)));
        $(
            let off = members.iter().find(|(n, _)| n == stringify!($field)).expect(stringify!($field)).1;
            assert_eq!(off as usize, offset_of!(abi::$ty, $field), concat!(stringify!($ty), ".", stringify!($field)));
        )*
        assert_eq!(members.len(), [$(stringify!($field)),*].len(), concat!("every field of ", stringify!($ty), " is checked"));
    }};
}

#[test]
fn bpf_target_layout_matches_rust() {
    let s = btf_structs(ABI_CHECK_OBJ);
    assert_layout!(s, nt_event_hdr { abi_version, kind, _pad0, len, ts_boot_ns });
    assert_layout!(s, nt_synthetic_event { hdr, seq, _pad });
    assert_layout!(
        s,
        nt_http_event {
            hdr,
            saddr,
            daddr,
            sport,
            dport,
            family,
            method,
            status,
            flags,
            _pad1,
            duration_ns,
            cgroup_id,
            trace_id
        }
    );
    assert_layout!(s, nt_http_key { cgroup_id, addr, family, method, status, flags });
    assert_layout!(s, nt_http_totals { sum_ns, buckets });
    assert_layout!(s, nt_http_slot { key, totals, generation });
    assert_layout!(
        s,
        nt_tcp_retransmit_event {
            hdr,
            saddr,
            daddr,
            sport,
            dport,
            family,
            state,
            rtx_kind,
            _pad1,
            err,
            segs,
            _pad2,
            netns_cookie
        }
    );
}

/// `HTTP_BOUNDS_NS` is `NT_HTTP_BOUNDS_NS_LIST` of abi.h, number for number.
#[test]
fn http_bounds_match_the_header() {
    let header = include_str!("../include/nettel/abi.h");
    let start = header.find("#define NT_HTTP_BOUNDS_NS_LIST").expect("the macro")
        + "#define NT_HTTP_BOUNDS_NS_LIST".len();
    let body: String = header[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace() && *c != '\\')
        .collect();
    let c: Vec<u64> = body
        .split(',')
        .map(|n| n.trim_end_matches("ULL").parse().unwrap_or_else(|_| panic!("`{n}`")))
        .collect();
    assert_eq!(c, crate::HTTP_BOUNDS_NS);
    assert_eq!(c.len() + 1, abi::NT_HTTP_BUCKETS as usize);
    assert!(c.windows(2).all(|w| w[0] < w[1]), "increasing");
}

#[test]
fn probe_object_is_embedded() {
    for obj in [crate::TCP_RETRANSMIT_OBJ, crate::HTTP_OBJ, crate::BENCH_OBJ] {
        assert!(obj.starts_with(b"\x7fELF"), "built without NETTEL_BPF_STUB");
    }
}
