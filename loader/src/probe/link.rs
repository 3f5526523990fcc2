// SPDX-License-Identifier: Apache-2.0
//! Pinned program links: what keeps the probes attached while no loader runs.
//!
//! Every attached program's link is pinned at `<pin dir>/links/<program>`. A
//! pinned link stays attached when the loader exits (SIGTERM or kill -9), so
//! the kernel keeps producing events into the pinned ring buffer, which the
//! next loader drains. At start the loader does, per program:
//!
//! * **adopt**: a link is pinned and its program has the same tag (the
//!   kernel's hash of the instructions, map references zeroed) as the one this
//!   loader just loaded: keep it, do not attach a second copy (which would
//!   count every event twice);
//! * **replace**: a link is pinned but its program differs (an upgrade) or it
//!   is not a link at all: remove the pin (which detaches it), then attach;
//! * **attach**: nothing pinned: attach and pin.
//!
//! Same tag is not enough on its own: the adopted program must also use the
//! maps pinned now. Reading a program's map ids needs CAP_SYS_ADMIN
//! (`BPF_PROG_GET_FD_BY_ID`), which the loader does not have, so an invariant
//! stands in for it: *every pinned link uses the maps pinned in its dir*. It
//! holds because whenever a map of an object has to be (re)created, the links
//! of that object's programs are removed first ([`purge`]), before any map is
//! created, so no link can outlive the maps it was attached with (a crash in
//! between leaves no link behind, only a later attach). Only the loader (root,
//! in a 0700 dir) writes the pin dir.
//!
//! Links pinned for programs this loader does not run (the other HTTP hook
//! set, the benchmark probe) are removed: [`remove_stale`].

use std::{
    fs,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};
use tracing::{info, warn};

use crate::{sys, Error};

/// Subdirectory of the pin dir holding the links.
pub const LINKS_DIR: &str = "links";

/// How a program came to be running after start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Attached by this loader; nothing was pinned.
    Attached,
    /// The pinned link of a previous loader, same program: kept.
    Adopted,
    /// A different program was pinned (an upgrade): detached, then attached.
    Replaced,
}

impl Origin {
    /// Lower-case name for logs and the status RPC.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attached => "attached",
            Self::Adopted => "adopted",
            Self::Replaced => "replaced",
        }
    }
}

/// What the kernel says about a pinned link (`/proc/self/fdinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedFacts {
    pub link_id: u32,
    pub prog_id: u32,
    pub prog_tag: u64,
}

/// Suffix of a program's own pin, next to its link's (`<program>-prog`):
/// what a restarted loader opens to read an adopted program's statistics.
/// Not a dot: bpffs refuses names with one (EPERM), keeping them for its own
/// files. A program name (a C identifier) has no `-`.
pub const PROG_PIN_SUFFIX: &str = "-prog";

/// Where `program` itself is pinned in the links dir `dir`.
pub fn prog_pin_path(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("{program}{PROG_PIN_SUFFIX}"))
}

/// Creates `<pin_dir>/links` (mode 0700) if missing and returns it.
pub fn prepare_dir(pin_dir: &Path) -> Result<PathBuf, Error> {
    let dir = pin_dir.join(LINKS_DIR);
    if !dir.exists() {
        fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|source| Error::Io {
            what: "failed to create the links dir",
            path: dir.clone(),
            source,
        })?;
    }
    Ok(dir)
}

/// Adopts, replaces or attaches `program` (see the module docs). `tag` is
/// the tag of the program this loader loaded; `attach` attaches it.
pub fn ensure(
    dir: &Path,
    program: &'static str,
    tag: u64,
    attach: impl FnOnce() -> Result<FdLink, Error>,
) -> Result<Origin, Error> {
    let path = dir.join(program);
    let origin = if path.exists() {
        match inspect(&path) {
            Ok(f) if f.prog_tag == tag => {
                info!(program, link_id = f.link_id, prog_id = f.prog_id, "Adopted the pinned link.");
                return Ok(Origin::Adopted);
            }
            Ok(f) => info!(
                program,
                link_id = f.link_id,
                pinned_tag = format_args!("{:016x}", f.prog_tag),
                loaded_tag = format_args!("{tag:016x}"),
                "The pinned link runs a different program; replacing it."
            ),
            Err(e) => warn!(program, error = %e, source = ?std::error::Error::source(&e),
                "Cannot inspect the pinned link; replacing it."),
        }
        remove(&path)?;
        Origin::Replaced
    } else {
        Origin::Attached
    };
    // The replaced program's own pin, or one a crash left without its link.
    let prog_pin = prog_pin_path(dir, program);
    if prog_pin.exists() {
        remove(&prog_pin)?;
    }
    let link = attach()?;
    let pinned: PinnedLink =
        link.pin(&path).map_err(|source| Error::PinLink { program, path: path.clone(), source })?;
    // Closing our descriptor leaves the pin as the only reference.
    drop(pinned);
    Ok(origin)
}

/// Removes the pinned links of `programs` (detaching them). Returns the names
/// removed.
pub fn purge(dir: &Path, programs: &[String]) -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    for p in programs {
        let path = dir.join(p);
        if path.exists() {
            remove(&path)?;
            removed.push(p.clone());
        }
        let prog_pin = prog_pin_path(dir, p);
        if prog_pin.exists() {
            remove(&prog_pin)?;
        }
    }
    Ok(removed)
}

/// Removes every pinned link in `dir` whose name is not in `keep`, which
/// detaches it, and every program pin not of a program in `keep`. Returns the
/// names removed.
pub fn remove_stale(dir: &Path, keep: &[&str]) -> Result<Vec<String>, Error> {
    let io = |what, source| Error::Io { what, path: dir.to_owned(), source };
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io("failed to list the links dir", e))? {
        let entry = entry.map_err(|e| io("failed to list the links dir", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name.strip_suffix(PROG_PIN_SUFFIX).unwrap_or(&name)) {
            continue;
        }
        remove(&entry.path())?;
        info!(link = %name, "Removed a pinned link this loader does not run (detached).");
        removed.push(name);
    }
    Ok(removed)
}

/// Removing the last reference to a link detaches its program.
fn remove(path: &Path) -> Result<(), Error> {
    fs::remove_file(path).map_err(|source| Error::Io {
        what: "failed to remove the pinned link",
        path: path.to_owned(),
        source,
    })
}

/// Opens the pinned link at `path` and reads what the kernel says about it.
pub fn inspect(path: &Path) -> Result<PinnedFacts, Error> {
    let io = |what, source| Error::Io { what, path: path.to_owned(), source };
    // aya gives no access to a link's descriptor, so find it as the one
    // bpf-link descriptor that opening the pin added. Single-threaded here
    // (before the runtime starts), so nothing else opens one meanwhile.
    let before = sys::bpf_link_fds().map_err(|e| io("cannot list /proc/self/fd", e))?;
    let link =
        PinnedLink::from_pin(path).map_err(|e| io("not a pinned BPF link", std::io::Error::other(e)))?;
    let after = sys::bpf_link_fds().map_err(|e| io("cannot list /proc/self/fd", e))?;
    let fd = match after.difference(&before).collect::<Vec<_>>()[..] {
        [fd] => *fd,
        _ => return Err(io("cannot find the link's descriptor", std::io::Error::other("ambiguous"))),
    };
    let fdinfo = sys::fdinfo(fd).map_err(|e| io("cannot read the link's fdinfo", e))?;
    drop(link);
    parse_fdinfo(&fdinfo).ok_or_else(|| io("unexpected link fdinfo", std::io::Error::other(fdinfo)))
}

/// Parses the `link_id`, `prog_id` and `prog_tag` lines of a link's fdinfo.
fn parse_fdinfo(fdinfo: &str) -> Option<PinnedFacts> {
    let field = |name: &str| fdinfo.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    Some(PinnedFacts {
        link_id: field("link_id:")?.parse().ok()?,
        prog_id: field("prog_id:")?.parse().ok()?,
        prog_tag: u64::from_str_radix(field("prog_tag:")?, 16).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_link_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000000\nmnt_id:\t16\nino:\t1057\nlink_type:\traw_tracepoint\n\
                      link_id:\t1150\nprog_tag:\tcff5a4c8895b2a11\nprog_id:\t3764\ntp_name:\tsock_send_length\n";
        assert_eq!(
            parse_fdinfo(fdinfo),
            Some(PinnedFacts { link_id: 1150, prog_id: 3764, prog_tag: 0xcff5_a4c8_895b_2a11 })
        );
        assert_eq!(parse_fdinfo("link_type:\tperf_event\nlink_id:\t3\n"), None, "no program");
    }
}
