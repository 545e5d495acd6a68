//! Handing a listening socket to a new process (`keygate run --upgrade`):
//! Pingora passes the proxy listeners over `[server] upgrade_sock`; the admin
//! listener, bound by keygate itself, travels the same way over a socket of
//! its own beside it (`<upgrade_sock>.admin`), so neither kind of listener is
//! ever closed while a new process takes over.

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the admin listener travels: beside the upgrade socket.
pub fn admin_path(upgrade_sock: &Path) -> PathBuf {
    let mut name = upgrade_sock.as_os_str().to_os_string();
    name.push(".admin");
    PathBuf::from(name)
}

/// Whether a process listens on the Unix socket at `path`, told from the
/// kernel's table (`/proc/net/unix`) rather than by connecting, which the
/// listener would take for the hand-over itself. A socket file left by a
/// process that died is not listening.
pub fn is_listening(path: &Path) -> bool {
    const ACCEPTING: u32 = 0x0001_0000; // __SO_ACCEPTCON
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.as_os_str().to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7] == want
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & ACCEPTING != 0)
    })
}

/// Sends `listener` to the process waiting at `path`.
pub fn send_listener(path: &Path, listener: &TcpListener) -> io::Result<()> {
    let stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let fds = [listener.as_raw_fd()];
    let payload = [IoSlice::new(b"A")];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &payload,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    Ok(())
}

/// The receiving end: bound before the old process is asked to hand over,
/// removed when dropped.
pub struct ListenerInbox {
    socket: UnixListener,
    path: PathBuf,
}

impl ListenerInbox {
    /// Binds `path`, replacing a file left there by a process that died.
    pub fn bind(path: &Path) -> io::Result<ListenerInbox> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let socket = UnixListener::bind(path)?;
        socket.set_nonblocking(true)?;
        Ok(ListenerInbox {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// Waits at most `within` for the listener.
    pub fn receive(&self, within: Duration) -> io::Result<TcpListener> {
        let deadline = Instant::now() + within;
        let stream = loop {
            match self.socket.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no admin listener was handed over in time",
                    ));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                return Ok(TcpListener::from(owned(fd)));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the hand-over carried no listener",
        ))
    }
}

impl Drop for ListenerInbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes ownership of a descriptor the kernel just handed us.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was installed in this process by SCM_RIGHTS for this
    // message alone; nothing else owns or closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_travels_and_keeps_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock.admin");
        // A stale file from a crashed process is replaced.
        std::fs::write(&path, "stale").unwrap();
        let inbox = ListenerInbox::bind(&path).unwrap();
        assert!(is_listening(&path), "listed as listening");
        let original = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = original.local_addr().unwrap();
        send_listener(&path, &original).unwrap();
        let received = inbox.receive(Duration::from_secs(2)).unwrap();
        assert_eq!(received.local_addr().unwrap(), addr);
        drop(original);
        // Still accepting: the socket itself travelled, not a copy of its address.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (server, _) = received.accept().unwrap();
        assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
        drop(inbox);
        assert!(!path.exists(), "removed when done");
        assert!(!is_listening(&path));
    }

    #[test]
    fn nothing_waiting_is_told_apart_from_a_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock");
        assert!(!is_listening(&path));
        {
            let _bound = UnixListener::bind(&path).unwrap();
        }
        assert!(path.exists(), "a socket file left behind");
        assert!(!is_listening(&path), "nobody listens on it");
        assert_eq!(admin_path(&path), dir.path().join("up.sock.admin"));
    }
}
