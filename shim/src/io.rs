//! The container's stdio as the shim holds it: pipes (stdout and stderr copied into the
//! CRI log, stdin kept open for attach) or a pty whose master arrives over a console
//! socket from libcontainer's init.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::unistd::pipe2;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;

use crate::log::{LineSplitter, LogFile, Stream};

/// Size of one read from a container stream.
const READ_BUF: usize = 16 * 1024;

/// The container's ends of its stdio, handed to libcontainer.
#[derive(Debug)]
pub struct ChildStdio {
    /// The read end of the stdin pipe, or /dev/null.
    pub stdin: OwnedFd,
    /// The write end of the stdout pipe.
    pub stdout: OwnedFd,
    /// The write end of the stderr pipe.
    pub stderr: OwnedFd,
}

/// The shim's ends of the container's stdio pipes.
#[derive(Debug)]
pub struct ShimStdio {
    /// The write end of stdin, when the container asked for stdin.
    pub stdin: Option<OwnedFd>,
    /// The read end of stdout.
    pub stdout: OwnedFd,
    /// The read end of stderr.
    pub stderr: OwnedFd,
}

/// Creates stdio pipes (close-on-exec on the shim's side); stdin is /dev/null unless
/// `stdin` is set.
pub fn pipes(stdin: bool) -> io::Result<(ChildStdio, ShimStdio)> {
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (child_in, shim_in) = if stdin {
        let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
        (r, Some(w))
    } else {
        (OwnedFd::from(dev_null()?), None)
    };
    let child = ChildStdio {
        stdin: child_in,
        stdout: out_w,
        stderr: err_w,
    };
    let shim = ShimStdio {
        stdin: shim_in,
        stdout: out_r,
        stderr: err_r,
    };
    Ok((child, shim))
}

/// Opens /dev/null for reading and writing.
pub fn dev_null() -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open("/dev/null")
}

/// Reads a pipe or pty master without blocking the runtime.
#[derive(Debug)]
pub struct FdReader(AsyncFd<OwnedFd>);

impl FdReader {
    /// Makes `fd` non-blocking and registers it with the runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(Self(fd))
    }

    /// Reads into `buf`; 0 at end of file (EIO on a pty whose other side closed).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            let res =
                guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from));
            match res {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.raw_os_error() == Some(Errno::EIO as i32) => return Ok(0),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Writes to a pipe or pty master without blocking the runtime.
#[derive(Debug)]
pub struct FdWriter(AsyncFd<OwnedFd>);

impl FdWriter {
    /// Makes `fd` non-blocking and registers it with the runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE)? };
        Ok(Self(fd))
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            let res =
                guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from));
            match res {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// One chunk of the init's output, as attaches get it.
pub type Chunk = (Stream, Arc<[u8]>);

/// Copies one container stream into the CRI log until end of file; with a `tap`,
/// every chunk also goes to the attaches subscribed to it.
pub async fn copy_to_log(
    reader: FdReader,
    stream: Stream,
    log: Arc<Mutex<LogFile>>,
    tap: Option<broadcast::Sender<Chunk>>,
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(?stream, %err, "read container output");
                break;
            }
        };
        if let Some(tap) = tap.as_ref().filter(|t| t.receiver_count() > 0) {
            let _ = tap.send((stream, Arc::from(&buf[..n])));
        }
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        splitter.push(&buf[..n], &mut |tag, c| log.write_record(stream, tag, c));
    }
    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
    splitter.finish(&mut |tag, c| log.write_record(stream, tag, c));
}

/// The socket on which libcontainer's init sends the master of the container's pty.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens at `path` (replacing a stale socket).
    pub fn bind(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path, for libcontainer.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the pty master that the init process has sent by now (libcontainer's
    /// create returns after the init connected and sent it), and removes the socket.
    pub fn receive_master(self) -> io::Result<OwnedFd> {
        self.receive_master_within(std::time::Duration::ZERO)
    }

    /// Like [`receive_master`](Self::receive_master), but waits up to `limit` for the
    /// process to connect. It blocks the shim's thread meanwhile: only for a process
    /// that libcontainer has already started.
    pub fn receive_master_within(self, limit: std::time::Duration) -> io::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let deadline = std::time::Instant::now() + limit;
        let conn = loop {
            match self.listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        let _ = std::fs::remove_file(&self.path);
                        return Err(e);
                    }
                    // Wake the moment the process connects: what follows (the pty's
                    // size) races with the process's own start.
                    let mut pfd = nix::libc::pollfd {
                        fd: self.listener.as_raw_fd(),
                        events: nix::libc::POLLIN,
                        revents: 0,
                    };
                    let ms = left.as_millis().min(i32::MAX as u128) as i32;
                    // SAFETY: poll reads and writes the one pollfd given.
                    unsafe { nix::libc::poll(&mut pfd, 1, ms.max(1)) };
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&self.path);
                    return Err(e);
                }
            }
        };
        let _ = std::fs::remove_file(&self.path);
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut data = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut data)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        Err(io::Error::other("console socket: no pty master received"))
    }
}

/// Sets the window size of the pty of `fd` (its master, or a terminal on it).
pub fn resize(fd: impl AsFd, width: u16, height: u16) -> io::Result<()> {
    let ws = nix::libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer given.
    let rc = unsafe { nix::libc::ioctl(fd.as_fd().as_raw_fd(), nix::libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn copies_pipe_output_into_the_log() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let log = Arc::new(Mutex::new(LogFile::open(&path).unwrap()));
        let (child, shim) = pipes(false).unwrap();
        let mut w = File::from(child.stdout);
        w.write_all(b"one\ntwo\nthree").unwrap();
        drop(w);
        drop(child.stderr);
        rt.block_on(async {
            let r = FdReader::new(shim.stdout).unwrap();
            copy_to_log(r, Stream::Stdout, Arc::clone(&log), None).await;
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<_> = text.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(recs, ["stdout F one", "stdout F two", "stdout P three"]);
    }
}
