// SPDX-License-Identifier: Apache-2.0
//! Compiles the C probes with clang and generates the Rust view of `abi.h`.
//!
//! * Every probe in [`PROBES`] becomes `$OUT_DIR/<name>.bpf.o` (BPF target of the
//!   host's endianness, `-g` for BTF/CO-RE). The build never reads the build
//!   host's kernel: all kernel types come from the committed
//!   `include/vmlinux/vmlinux.h`.
//! * bindgen turns `include/nettel/abi.h` into `$OUT_DIR/abi.rs` with layout tests.
//! * `CLANG` overrides the compiler. `NETTEL_BPF_STUB=1` writes empty objects so
//!   `cargo check`/clippy work on machines without clang; such a build cannot load
//!   probes and the loader refuses to start with a clear error.

use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

/// Probe objects, one per program family (`probes/<name>.bpf.c`).
const PROBES: &[&str] = &["tcp_retransmit", "http", "bench", "floor"];
/// Objects built for tests only, never loaded.
const CHECK_OBJECTS: &[(&str, &str)] = &[("abi_check", "abi_check.bpf.c")];

fn main() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN")?;
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let target = if endian == "big" { "bpfeb" } else { "bpfel" };
    let target_arch = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    for dir in ["include", "lib", "probes", "abi_check.bpf.c"] {
        println!("cargo:rerun-if-changed={}", manifest.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=NETTEL_BPF_STUB");
    let stub = env::var("NETTEL_BPF_STUB").is_ok_and(|v| v == "1");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());

    let objects = PROBES
        .iter()
        .map(|p| (*p, format!("probes/{p}.bpf.c")))
        .chain(CHECK_OBJECTS.iter().map(|(n, s)| (*n, (*s).to_owned())));
    for (name, src) in objects {
        let obj = out.join(format!("{name}.bpf.o"));
        if stub {
            std::fs::write(&obj, b"")?;
            continue;
        }
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-Wall", "-Werror", "-mcpu=v3"])
            .arg(format!("--target={target}"))
            .arg(format!("-D__TARGET_ARCH_{target_arch}"))
            .arg("-I")
            .arg(manifest.join("include"))
            .arg("-I")
            .arg(manifest.join("lib"))
            .arg("-c")
            .arg(manifest.join(&src))
            .arg("-o")
            .arg(&obj)
            .status()
            .with_context(|| {
                format!(
                    "failed to run `{clang}` (install clang, or set NETTEL_BPF_STUB=1 for check-only builds)"
                )
            })?;
        if !status.success() {
            bail!("clang failed to compile `{src}`: {status}");
        }
    }

    let bindings = bindgen::Builder::default()
        .header(manifest.join("include/nettel/abi.h").display().to_string())
        .clang_arg("-D__u8=unsigned char")
        .clang_arg("-D__u16=unsigned short")
        .clang_arg("-D__s32=int")
        .clang_arg("-D__u32=unsigned int")
        .clang_arg("-D__u64=unsigned long long")
        .allowlist_type("nt_.*")
        .allowlist_var("NT_.*")
        .derive_default(true)
        .layout_tests(true)
        .prepend_enum_name(false)
        .generate()
        .context("bindgen failed on include/nettel/abi.h")?;
    bindings.write_to_file(out.join("abi.rs"))?;
    Ok(())
}
