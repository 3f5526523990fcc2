// SPDX-License-Identifier: Apache-2.0
//! The loader's Unix socket: created without a permission race, and guarded by
//! a peer-credential allow-list and a connection limit. What an admitted peer
//! may then send is bounded by [`conn`](crate::conn).
//!
//! Creation: bind inside a fresh private (0700) directory next to the final
//! path, set mode and group there, then `rename(2)` into place. No client can
//! reach the socket before its final mode is set.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
};
use tracing::{info, warn};

use crate::{
    counters::{self, Counters},
    Error,
};

/// Who may connect.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Peers whose uid is listed are accepted.
    pub allow_uids: Vec<u32>,
    /// Peers whose primary gid is listed are accepted.
    pub allow_gids: Vec<u32>,
    /// Most simultaneous connections; more are closed at once and counted.
    /// Refused connections are logged at powers of two (see [`counters::bump`]).
    pub max_connections: usize,
}

impl AccessPolicy {
    fn allows(&self, uid: u32, gid: u32) -> bool {
        self.allow_uids.contains(&uid) || self.allow_gids.contains(&gid)
    }
}

/// Binds `path` with mode 0660 and group `gid` (if given), replacing a stale
/// socket but refusing to replace anything else. Returns a non-blocking std
/// listener, so it can be bound before the runtime starts (the loader binds
/// while it still holds its capabilities, then drops them).
///
/// Setting the group needs no capability when `gid` is the loader's own
/// primary or supplementary group (the DaemonSet runs the loader with the
/// aggregator's group); any other gid needs CAP_CHOWN.
pub fn bind(path: &Path, gid: Option<u32>) -> Result<std::os::unix::net::UnixListener, Error> {
    let err = |what: &'static str| move |source| Error::Socket { path: path.to_owned(), what, source };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(parent)
        .map_err(err("cannot create parent directory"))?;
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            fs::remove_file(path).map_err(err("cannot remove stale socket"))?
        }
        Ok(_) => {
            return Err(Error::Socket {
                path: path.to_owned(),
                what: "exists and is not a socket; refusing to replace it",
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("cannot stat")(e)),
    }
    let private = parent.join(format!(".nettel-loader.{}.{:x}", std::process::id(), rand::random::<u32>()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(err("cannot create private bind directory"))?;
    let result = (|| {
        let tmp = private.join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(err("cannot bind"))?;
        listener.set_nonblocking(true).map_err(err("cannot make non-blocking"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o660)).map_err(err("cannot chmod"))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid)).map_err(err("cannot chown"))?;
        }
        fs::rename(&tmp, path).map_err(err("cannot move into place"))?;
        Ok(listener)
    })();
    let _ = fs::remove_dir_all(&private);
    result
}

/// Accepts connections, admitting only allowed peers within the connection
/// limit, and forwards them to [`conn::serve`](crate::conn::serve). A refused
/// connection is closed at once: it holds no descriptor, task or memory after
/// its `accept`.
pub fn accept_loop(
    listener: UnixListener,
    policy: AccessPolicy,
    counters: Arc<Counters>,
) -> mpsc::Receiver<GuardedStream> {
    let (tx, rx) = mpsc::channel(16);
    let limit = Arc::new(Semaphore::new(policy.max_connections));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let cred = match stream.peer_cred() {
                Ok(c) => c,
                Err(e) => {
                    if let Some(total) = counters::bump(&counters.peers_rejected) {
                        warn!(total, error = %e, "Rejected a peer whose credentials could not be read.");
                    }
                    continue;
                }
            };
            if !policy.allows(cred.uid(), cred.gid()) {
                if let Some(total) = counters::bump(&counters.peers_rejected) {
                    warn!(
                        total,
                        uid = cred.uid(),
                        gid = cred.gid(),
                        "Rejected a peer outside the allow-list."
                    );
                }
                continue;
            }
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                if let Some(total) = counters::bump(&counters.connections_over_limit) {
                    warn!(
                        total,
                        uid = cred.uid(),
                        limit = policy.max_connections,
                        "Rejected a peer: connection limit reached."
                    );
                }
                continue;
            };
            info!(uid = cred.uid(), gid = cred.gid(), "Accepted a subscriber connection.");
            if tx.send(GuardedStream { inner: stream, _permit: permit }).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// An admitted connection; holds its connection-limit permit until closed.
#[derive(Debug)]
pub struct GuardedStream {
    inner: UnixStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Removes the socket at `path` if it is one (on shutdown).
pub fn remove(path: &Path) {
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = fs::remove_file(path);
    }
}

/// Default socket path.
pub fn default_path() -> PathBuf {
    PathBuf::from("/run/nettel/loader.sock")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[tokio::test]
    async fn binds_with_final_mode_and_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loader.sock");
        let l1 = bind(&path, None).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
        drop(l1);
        // A stale socket is replaced.
        let _l2 = bind(&path, None).unwrap();
        // No private bind directory is left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("loader.sock")]);
        // A regular file is never replaced.
        let file = dir.path().join("not-a-socket");
        fs::write(&file, b"x").unwrap();
        let e = bind(&file, None).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"x");
    }
}
