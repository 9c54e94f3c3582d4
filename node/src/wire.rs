//! The comm port's connections, plain TCP or TLS (`--tls-cert/--tls-key/--tls-ca`),
//! behind one surface for each side of a connection, so that replication and votes do
//! not care which:
//!
//! - [`Conn`]: the secondary's blocking connection (the follower thread reads it; a
//!   delayed-writes thread and `Link::stop` share it through [`Conn::try_clone`]).
//! - [`Receiver`] and [`Sender`]: the two halves of an accepted connection on the
//!   master's event loop. The sender writes without waiting (`try_send`), which is how
//!   the replicator puts a frame on the wire the moment it decides to.
//! - [`dial`]: a candidate's connection to a voter.
//!
//! TLS keeps the two directions of a connection in one state machine (rustls's
//! `Connection`), so both halves share a [`Pipe`] under a lock: ciphertext leaves it in
//! the order it was made, whichever half makes it. The lock is never held across a
//! wait for the socket to become readable.

use bytes::{Buf, BytesMut};
use common::tls::Tls;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// How much ciphertext one read from the socket takes at most.
const CIPHER_CHUNK: usize = 256 << 10;

/// One TLS connection's state between the socket and the frames: ciphertext in,
/// plaintext out, and back.
pub struct Pipe {
    conn: rustls::Connection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    raw: BytesMut,
}

impl Pipe {
    fn new(conn: impl Into<rustls::Connection>) -> Self {
        let mut conn = conn.into();
        // Frames are bounded by the codec and queued by their writers; the pipe only
        // encrypts what it is given.
        conn.set_buffer_limit(None);
        Pipe {
            conn,
            raw: BytesMut::new(),
        }
    }

    /// Decrypt into `buf` (not empty) as much as has arrived. None: nothing yet, read
    /// the socket; Some(0): the peer closed the TLS session.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                return Ok(Some(filled));
            }
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(Some(filled)), // close_notify (after what came before)
                Ok(n) => {
                    filled += n;
                    continue; // until rustls holds no more plaintext
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(filled)),
                Err(e) => return Err(e),
            }
            if self.raw.is_empty() {
                return Ok((filled > 0).then_some(filled));
            }
            let mut rd: &[u8] = &self.raw;
            let n = self.conn.read_tls(&mut rd)?;
            self.raw.advance(n);
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    fn received(&mut self, cipher: &[u8]) {
        self.raw.extend_from_slice(cipher);
    }

    /// Encrypt `plain` for sending (it waits in the pipe until [`Self::flush_to`]).
    fn write(&mut self, plain: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(plain)
    }

    /// Write what is encrypted to `w` until done (true) or `w` would block (false).
    fn flush_to(&mut self, w: &mut dyn Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(w) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }
}

fn lock(pipe: &Mutex<Pipe>) -> MutexGuard<'_, Pipe> {
    pipe.lock().unwrap_or_else(|e| e.into_inner())
}

/// A blocking comm connection, plain or TLS.
pub struct Conn {
    tcp: TcpStream,
    tls: Option<Arc<Mutex<Pipe>>>,
    /// Ciphertext from the socket, on its way into the pipe (TLS only).
    chunk: Vec<u8>,
}

impl Conn {
    /// Dial `address`; with `tls`, complete a mutual handshake within `timeout`,
    /// checking that the peer's certificate names the host dialled.
    pub fn connect(
        address: &str,
        tls: Option<&Tls>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> io::Result<Conn> {
        use std::net::ToSocketAddrs;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        // Resolved again on every attempt: a container's address may change.
        for addr in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, connect_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut tcp = tcp.ok_or(last)?;
        let Some(tls) = tls else {
            return Ok(Conn {
                tcp,
                tls: None,
                chunk: Vec::new(),
            });
        };
        let name = common::tls::server_name(address)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut conn = rustls::ClientConnection::new(tls.comm_client.clone(), name)
            .map_err(io::Error::other)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(tls_error)?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut tcp)?;
        }
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        Ok(Conn {
            tcp,
            tls: Some(Arc::new(Mutex::new(Pipe::new(conn)))),
            chunk: vec![0; CIPHER_CHUNK],
        })
    }

    /// The same connection, for another thread.
    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(Conn {
            tcp: self.tcp.try_clone()?,
            tls: self.tls.clone(),
            chunk: if self.tls.is_some() {
                vec![0; CIPHER_CHUNK]
            } else {
                Vec::new()
            },
        })
    }

    /// The TCP socket (time-outs, shutdown).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how == Shutdown::Write
            && let Some(pipe) = &self.tls
        {
            // Best effort: a peer that reads on sees a clean end of the session. (Not
            // for `Both`: that cuts a connection another thread may be blocked on.)
            let mut p = lock(pipe);
            p.conn.send_close_notify();
            let _ = p.flush_to(&mut &self.tcp);
        }
        self.tcp.shutdown(how)
    }

    /// Read what has arrived (0: closed); a time-out set on the socket is an error of
    /// kind `WouldBlock` or `TimedOut`, and loses nothing.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(pipe) = &self.tls else {
            return (&self.tcp).read(buf);
        };
        loop {
            {
                let mut p = lock(pipe);
                let got = p.read(buf)?;
                if p.wants_write() {
                    // A post-handshake answer (a key update): written before more data.
                    write_blocking(&mut p, &self.tcp)?;
                }
                if let Some(n) = got {
                    return Ok(n);
                }
            }
            let n = (&self.tcp).read(&mut self.chunk)?;
            if n == 0 {
                return Ok(0);
            }
            lock(pipe).received(&self.chunk[..n]);
        }
    }

    /// Write all of `bytes` (bounded by the socket's write time-out).
    pub fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let Some(pipe) = &self.tls else {
            return (&self.tcp).write_all(bytes);
        };
        let mut p = lock(pipe);
        p.write(bytes)?;
        write_blocking(&mut p, &self.tcp)
    }
}

/// Write everything the pipe holds to a blocking socket; its write time-out (which
/// shows as `WouldBlock`) is an error here.
fn write_blocking(p: &mut Pipe, mut tcp: &TcpStream) -> io::Result<()> {
    if p.flush_to(&mut tcp)? {
        Ok(())
    } else {
        Err(io::ErrorKind::TimedOut.into())
    }
}

/// A handshake failure as the log should say it.
fn tls_error(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("TLS handshake: {e}"))
}

/// Accept a connection on the comm port: plain, or (with `tls`) after a mutual
/// handshake; then split into its halves.
pub async fn accept(
    tcp: tokio::net::TcpStream,
    tls: Option<&Tls>,
) -> io::Result<(Receiver, Sender)> {
    let Some(tls) = tls else {
        let (read, write) = tcp.into_split();
        return Ok((
            Receiver {
                tcp: read,
                tls: None,
            },
            Sender {
                tcp: write,
                tls: None,
            },
        ));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.comm_server.clone());
    let (tcp, conn) = acceptor.accept(tcp).await.map_err(tls_error)?.into_inner();
    let pipe = Arc::new(Mutex::new(Pipe::new(conn)));
    let (read, write) = tcp.into_split();
    Ok((
        Receiver {
            tcp: read,
            tls: Some((pipe.clone(), vec![0; CIPHER_CHUNK].into_boxed_slice())),
        },
        Sender {
            tcp: write,
            tls: Some(pipe),
        },
    ))
}

/// A pipe shared with the sender, and room for the ciphertext read.
type TlsReading = (Arc<Mutex<Pipe>>, Box<[u8]>);

/// The reading half of an accepted connection.
pub struct Receiver {
    tcp: OwnedReadHalf,
    tls: Option<TlsReading>,
}

impl AsyncRead for Receiver {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some((pipe, chunk)) = &mut this.tls else {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        };
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            {
                let mut p = lock(pipe);
                let got = p.read(buf.initialize_unfilled())?;
                if p.wants_write() {
                    // A post-handshake answer: out now if the socket takes it, else
                    // with the sender's next write.
                    let stream: &tokio::net::TcpStream = this.tcp.as_ref();
                    p.flush_to(&mut TryWrite(stream))?;
                }
                if let Some(n) = got {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
            }
            let mut cipher = ReadBuf::new(chunk);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut cipher))?;
            if cipher.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            lock(pipe).received(cipher.filled());
        }
    }
}

/// The writing half of an accepted connection. It never waits inside a call: what the
/// socket does not take stays with the caller ([`Self::try_send`]) or in the pipe.
pub struct Sender {
    tcp: OwnedWriteHalf,
    tls: Option<Arc<Mutex<Pipe>>>,
}

/// A socket as `io::Write` that never waits (`WouldBlock` when full).
struct TryWrite<'a>(&'a tokio::net::TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sender {
    /// Write from `buf` without waiting. True: everything is out (`buf` is empty and
    /// nothing waits in the pipe); false: the socket is full, call again once
    /// [`Self::writable`].
    pub fn try_send(&self, buf: &mut BytesMut) -> io::Result<bool> {
        let Some(pipe) = &self.tls else {
            while !buf.is_empty() {
                match self.tcp.try_write(buf) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => buf.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            return Ok(true);
        };
        let mut p = lock(pipe);
        if !buf.is_empty() {
            p.write(buf)?;
            buf.clear();
        }
        p.flush_to(&mut TryWrite(self.tcp.as_ref()))
    }

    /// Wait until the socket takes more.
    pub async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// Write all of `bytes`, waiting as needed.
    pub async fn send_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut buf = BytesMut::from(bytes);
        while !self.try_send(&mut buf)? {
            self.writable().await?;
        }
        Ok(())
    }

    /// Close the sending direction (after a TLS close_notify, if the socket takes it).
    pub fn shutdown(&self) -> io::Result<()> {
        if let Some(pipe) = &self.tls {
            let mut p = lock(pipe);
            p.conn.send_close_notify();
            let _ = p.flush_to(&mut TryWrite(self.tcp.as_ref()));
        }
        let stream: &tokio::net::TcpStream = self.tcp.as_ref();
        match socket2::SockRef::from(stream).shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            done => done,
        }
    }
}

/// A candidate's connection to a voter: plain, or TLS verified both ways.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Dial the member at `address` (async side: votes).
pub async fn dial(address: &str, tls: Option<&Tls>) -> io::Result<Box<dyn Stream>> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let name = common::tls::server_name(address)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let connector = tokio_rustls::TlsConnector::from(tls.comm_client.clone());
    let stream = connector.connect(name, tcp).await.map_err(tls_error)?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A new CA and the certificate of node `n` it signed, by scripts/tls-certs.sh.
    fn make_tls() -> (tempfile::TempDir, Tls) {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tls-certs.sh");
        let done = std::process::Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .arg("n")
            .output()
            .unwrap();
        assert!(done.status.success(), "{done:?}");
        let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
        let tls = Tls::new(
            &common::tls::CertChain::from_file(&p("n.pem")).unwrap(),
            &common::tls::PrivateKey::from_file(&p("n-key.pem")).unwrap(),
            &common::tls::CaRoots::from_file(&p("ca.pem")).unwrap(),
        )
        .unwrap();
        (dir, tls)
    }

    /// Bytes that say where in the stream they are.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Far more than the socket buffers and rustls's records hold, both ways, over
    /// mutual TLS: the accepted side's sender (which never waits) and receiver, the
    /// dialling side's blocking connection, reads of every size. Everything arrives,
    /// in order, and each side sees the other's close.
    #[actix_web::test]
    async fn tls_carries_everything_in_order_both_ways() {
        let (_dir, tls) = make_tls();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let down = pattern(20 << 20, 7);
        let up = pattern(5 << 20, 3);
        let client = {
            let (tls, down, up) = (tls.clone(), down.clone(), up.clone());
            tokio::task::spawn_blocking(move || {
                let mut c = Conn::connect(
                    &addr,
                    Some(&tls),
                    Duration::from_secs(5),
                    Duration::from_secs(5),
                )
                .unwrap();
                let writer = c.try_clone().unwrap();
                let sending = std::thread::spawn(move || {
                    for part in up.chunks(100_003) {
                        writer.write_all(part).unwrap();
                    }
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                let mut got = Vec::new();
                let mut sizes = [1usize, 7, 4096, 1 << 20].into_iter().cycle();
                loop {
                    let mut buf = vec![0; sizes.next().unwrap()];
                    match c.read(&mut buf).unwrap() {
                        0 => break,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
                sending.join().unwrap();
                assert!(got == down, "the dialling side got {} bytes", got.len());
            })
        };
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut rx, tx) = accept(tcp, Some(&tls)).await.unwrap();
        let reading = actix_web::rt::spawn(async move {
            let mut got = Vec::new();
            rx.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut pending = BytesMut::new();
        for part in down.chunks(32 << 10) {
            pending.extend_from_slice(part);
            while !tx.try_send(&mut pending).unwrap() {
                tx.writable().await.unwrap();
            }
        }
        tx.shutdown().unwrap();
        let got = reading.await.unwrap();
        assert!(got == up, "the accepting side got {} bytes", got.len());
        client.await.unwrap();
    }

    /// A peer that dials without TLS is refused by a TLS listener, and a TLS peer
    /// that does not know the CA refuses the listener.
    #[actix_web::test]
    async fn plain_and_unverified_peers_fail_the_handshake() {
        let (_dir, tls) = make_tls();
        let (_other_dir, other) = make_tls(); // another CA
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        for (dialler, connects) in [(None, true), (Some(other), false)] {
            let addr = addr.clone();
            let client = tokio::task::spawn_blocking(move || {
                let c = Conn::connect(
                    &addr,
                    dialler.as_ref(),
                    Duration::from_secs(5),
                    Duration::from_secs(5),
                );
                if let Ok(c) = &c {
                    // Plain: say something that is not a TLS hello.
                    let _ = c.write_all(b"hello, not TLS");
                }
                c.is_ok()
            });
            let (tcp, _) = listener.accept().await.unwrap();
            let refused = accept(tcp, Some(&tls)).await;
            assert!(refused.is_err(), "the listener accepted");
            // A plain dial connects (TCP); a TLS one fails its own check of the
            // listener's certificate.
            assert_eq!(client.await.unwrap(), connects);
        }
    }
}
