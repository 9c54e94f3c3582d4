//! Clients for the peers chorus is measured against, each speaking its server's own
//! protocol with the least work a client can do: Redis (RESP over TCP) and etcd (gRPC
//! over HTTP/2). Every write is one round trip; the error of a failed write is a short
//! kind for the tally.

use bytes::Bytes;
use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufStream, ReadBuf};
use tokio::net::TcpStream;

/// A connection, plain or TLS (chorus with `--tls-cert`).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Keep-alive connections to one address, one per outstanding write: a write takes an
/// idle one or opens a new one, and gives it back only if it is in a known state.
struct Pool {
    addr: String,
    /// TLS, verifying the server as `name`.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    idle: RefCell<Vec<BufStream<Stream>>>,
}

impl Pool {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            tls: None,
            idle: RefCell::new(Vec::new()),
        }
    }

    async fn take(&self) -> Result<BufStream<Stream>, String> {
        let idle = self.idle.borrow_mut().pop();
        match idle {
            Some(c) => Ok(c),
            None => {
                let s = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| format!("no answer: {e}"))?;
                let _ = s.set_nodelay(true);
                let s = match &self.tls {
                    None => Stream::Plain(s),
                    Some((connector, name)) => Stream::Tls(Box::new(
                        connector
                            .connect(name.clone(), s)
                            .await
                            .map_err(|e| format!("no answer: TLS: {e}"))?,
                    )),
                };
                Ok(BufStream::new(s))
            }
        }
    }

    fn put(&self, conn: BufStream<Stream>) {
        self.idle.borrow_mut().push(conn);
    }
}

/// `RPUSH chorus-bench <message>`, then `WAIT <replicas> 0` when replicas > 0, sent
/// together on one connection: the answer to WAIT comes once that many replicas have
/// acknowledged everything this connection wrote.
pub struct Redis {
    pool: Pool,
    command: Vec<u8>,
    replicas: u64,
}

fn resp(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Redis {
    pub fn new(addr: &str, message: &str, replicas: u64) -> Self {
        let mut command = Vec::new();
        resp(
            &[b"RPUSH", b"chorus-bench", message.as_bytes()],
            &mut command,
        );
        if replicas > 0 {
            resp(
                &[b"WAIT", replicas.to_string().as_bytes(), b"0"],
                &mut command,
            );
        }
        Self {
            pool: Pool::new(addr),
            command,
            replicas,
        }
    }

    pub async fn write(&self) -> Result<(), String> {
        let mut conn = self.pool.take().await?;
        self.round_trip(&mut conn).await?;
        self.pool.put(conn);
        Ok(())
    }

    async fn round_trip(&self, conn: &mut BufStream<Stream>) -> Result<(), String> {
        let io = |e: std::io::Error| format!("no answer: {e}");
        conn.write_all(&self.command).await.map_err(io)?;
        conn.flush().await.map_err(io)?;
        let mut line = String::new();
        let replies = if self.replicas > 0 { 2 } else { 1 };
        for i in 0..replies {
            line.clear();
            if conn.read_line(&mut line).await.map_err(io)? == 0 {
                return Err("no answer: connection closed".into());
            }
            let reply = line.trim_end();
            let Some(n) = reply.strip_prefix(':') else {
                let word = reply.split_whitespace().next().unwrap_or("?");
                return Err(format!("redis {word}"));
            };
            if i == 1
                && n.parse::<u64>()
                    .map_err(|_| format!("redis reply {reply:?}"))?
                    < self.replicas
            {
                return Err("redis WAIT short of replicas".into());
            }
        }
        Ok(())
    }
}

/// `POST /newMessage` over HTTP/1.1 (or HTTPS) keep-alive connections, one per outstanding
/// write: the request bytes are built once, the answer's status line and
/// `Content-Length` are all that is parsed. As lean as the Redis client, so that on a
/// machine the servers share with their load the client takes the same small share
/// whichever server it drives (awc cost ~10 µs a request here; `--http-client awc`).
pub struct Http {
    pool: Pool,
    request: Vec<u8>,
}

impl Http {
    /// `url` is http(s)://HOST:PORT[/]; `body` the JSON of every write; `tls` the
    /// configuration for an https:// URL.
    pub fn new(
        url: &str,
        body: &str,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Self> {
        let https = url.starts_with("https://");
        let addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let mut pool = Pool::new(&addr);
        if https {
            let Some(tls) = tls else {
                anyhow::bail!("an https:// URL needs --tls-ca");
            };
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
            let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
            pool.tls = Some((tokio_rustls::TlsConnector::from(tls), name));
        }
        let mut request = format!(
            "POST /newMessage HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        Ok(Self { pool, request })
    }

    /// One write; Ok only for a 201, otherwise the status (or why there was none).
    pub async fn write(&self) -> Result<(), String> {
        let mut conn = self.pool.take().await?;
        let (status, keep) = http_round_trip(&mut conn, &self.request).await?;
        if keep {
            self.pool.put(conn);
        }
        if status == 201 {
            Ok(())
        } else {
            Err(status.to_string())
        }
    }
}

/// Send `request`, read one response; its status and whether the connection stays open.
async fn http_round_trip(
    conn: &mut BufStream<Stream>,
    request: &[u8],
) -> Result<(u16, bool), String> {
    use tokio::io::AsyncReadExt;
    let io = |e: std::io::Error| format!("no answer: {e}");
    conn.write_all(request).await.map_err(io)?;
    conn.flush().await.map_err(io)?;
    let mut line = String::new();
    if conn.read_line(&mut line).await.map_err(io)? == 0 {
        return Err("no answer: connection closed".into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("no answer: bad status line {line:?}"))?;
    let (mut length, mut keep) = (0usize, true);
    loop {
        line.clear();
        if conn.read_line(&mut line).await.map_err(io)? == 0 {
            return Err("no answer: connection closed in the headers".into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value
                    .parse()
                    .map_err(|_| format!("no answer: bad length {value:?}"))?;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                keep = false;
            }
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await.map_err(io)?;
    Ok((status, keep))
}

/// gRPC `etcdserverpb.KV/Put` of one key over a shared HTTP/2 connection.
pub struct Etcd {
    send: h2::client::SendRequest<Bytes>,
    uri: String,
    body: Bytes,
}

/// Protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-prefixed gRPC message holding `PutRequest { key = 1, value = 2 }`.
fn put_request(key: &[u8], value: &[u8]) -> Bytes {
    let mut pb = Vec::with_capacity(key.len() + value.len() + 8);
    for (tag, field) in [(0x0a, key), (0x12, value)] {
        pb.push(tag);
        varint(field.len() as u64, &mut pb);
        pb.extend_from_slice(field);
    }
    let mut framed = Vec::with_capacity(pb.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    framed.extend_from_slice(&pb);
    Bytes::from(framed)
}

impl Etcd {
    /// Connect to `addr` (HOST:PORT, plain text) and start the connection's task on the
    /// current event loop.
    pub async fn connect(addr: &str, message: &str) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(tcp)
            .await?;
        actix_rt::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("etcd connection ended: {e}");
            }
        });
        Ok(Self {
            send,
            uri: format!("http://{addr}/etcdserverpb.KV/Put"),
            body: put_request(b"chorus-bench", message.as_bytes()),
        })
    }

    pub async fn write(&self) -> Result<(), String> {
        let h2e = |e: h2::Error| format!("no answer: {e}");
        let request = http::Request::builder()
            .method("POST")
            .uri(&self.uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a valid request");
        let mut send = self.send.clone().ready().await.map_err(h2e)?;
        let (response, mut stream) = send.send_request(request, false).map_err(h2e)?;
        stream.send_data(self.body.clone(), true).map_err(h2e)?;
        let response = response.await.map_err(h2e)?;
        let (head, mut body) = response.into_parts();
        if head.status != 200 {
            return Err(format!("etcd http {}", head.status.as_u16()));
        }
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(h2e)?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(h2e)?;
        // A "trailers-only" answer carries grpc-status in the headers.
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| head.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("missing");
        if status == "0" {
            Ok(())
        } else {
            Err(format!("etcd grpc-status {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_request_is_length_prefixed_protobuf() {
        let value = vec![b'v'; 200];
        let b = put_request(b"k", &value);
        assert_eq!(b[0], 0);
        let len = u32::from_be_bytes(b[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, b.len() - 5);
        // key: tag 1, length 1, "k"; value: tag 2, varint 200 = [0xc8, 0x01].
        assert_eq!(&b[5..11], &[0x0a, 1, b'k', 0x12, 0xc8, 0x01]);
        assert_eq!(&b[11..], &value[..]);
    }

    #[test]
    fn http_request_is_built_once_with_its_length() {
        let h = Http::new("http://127.0.0.1:8080/", r#"{"message":"hi"}"#, None).unwrap();
        assert_eq!(h.pool.addr, "127.0.0.1:8080");
        let text = String::from_utf8(h.request).unwrap();
        assert!(text.starts_with("POST /newMessage HTTP/1.1\r\n"), "{text}");
        assert!(
            text.contains("content-length: 16\r\n\r\n{\"message\":\"hi\"}"),
            "{text}"
        );
    }

    #[test]
    fn redis_command_pipelines_rpush_and_wait() {
        let r = Redis::new("127.0.0.1:1", "hi", 2);
        assert_eq!(
            String::from_utf8(r.command.clone()).unwrap(),
            "*3\r\n$5\r\nRPUSH\r\n$12\r\nchorus-bench\r\n$2\r\nhi\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$1\r\n0\r\n"
        );
        assert!(
            !String::from_utf8(Redis::new("a:1", "hi", 0).command)
                .unwrap()
                .contains("WAIT")
        );
    }
}
