// SPDX-License-Identifier: Apache-2.0
//! The pin dir under bpffs: created private, refused when anyone but root can
//! write to it, and every map already pinned there is verified before aya is
//! allowed to reuse it (aya reuses a pinned map by name without checks).

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};

use crate::{sys, Error};

/// What a pinned map must look like to be reused.
#[derive(Debug, Clone, Copy)]
pub struct MapSpec {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// Creates `dir` (mode 0700) if missing and verifies it is a bpffs directory
/// owned by the loader's uid and not writable by group or others.
pub fn prepare_dir(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        fs::DirBuilder::new().mode(0o700).recursive(true).create(dir).map_err(|source| Error::Io {
            what: "failed to create pin dir",
            path: dir.to_owned(),
            source,
        })?;
    }
    let meta = fs::symlink_metadata(dir).map_err(|source| Error::Io {
        what: "failed to stat pin dir",
        path: dir.to_owned(),
        source,
    })?;
    let unsafe_dir = |reason: String| Error::UnsafePinDir { path: dir.to_owned(), reason };
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    if meta.uid() != sys::euid() {
        return Err(unsafe_dir(format!("owned by uid {}, not the loader's uid {}", meta.uid(), sys::euid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {:o} is group/world-writable; chmod go-w it",
            meta.mode() & 0o7777
        )));
    }
    match sys::fs_magic(dir) {
        Ok(m) if m == sys::BPF_FS_MAGIC => Ok(()),
        _ => Err(unsafe_dir("not on a bpf filesystem".into())),
    }
}

/// Verifies every map of `specs` that is already pinned in `dir`.
pub fn verify_existing(dir: &Path, specs: &[MapSpec]) -> Result<(), Error> {
    for spec in specs {
        let path = dir.join(spec.name);
        if !path.exists() {
            continue;
        }
        let mismatch =
            |reason: String| Error::PinnedMapMismatch { map: spec.name, path: path.clone(), reason };
        let meta = fs::symlink_metadata(&path).map_err(|e| mismatch(format!("cannot stat: {e}")))?;
        if meta.uid() != sys::euid() || meta.mode() & 0o022 != 0 {
            return Err(mismatch(format!(
                "owner uid {} mode {:o} is not private",
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        let info = MapInfo::from_pin(&path).map_err(|e| mismatch(format!("not a BPF map: {e}")))?;
        let ty = info.map_type().map_err(|e| mismatch(format!("unknown map type: {e}")))?;
        let got = (ty, info.key_size(), info.value_size(), info.max_entries());
        let want = (spec.map_type, spec.key_size, spec.value_size, spec.max_entries);
        if got != want {
            return Err(mismatch(format!(
                "found (type {:?}, key {}, value {}, max_entries {}), expected (type {:?}, key {}, value {}, max_entries {})",
                got.0, got.1, got.2, got.3, want.0, want.1, want.2, want.3
            )));
        }
    }
    Ok(())
}

/// Removes every pin of `names` from `dir`, then `dir` itself if empty.
/// Returns the paths removed.
pub fn cleanup(dir: &Path, names: &[&str]) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    for name in names {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { what: "failed to remove pin", path, source }),
        }
    }
    if dir.exists() && fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()) {
        fs::remove_dir(dir).map_err(|source| Error::Io {
            what: "failed to remove pin dir",
            path: dir.to_owned(),
            source,
        })?;
        removed.push(dir.to_owned());
    }
    Ok(removed)
}
