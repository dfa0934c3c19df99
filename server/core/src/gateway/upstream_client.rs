//! The client for upstreams: hyper-util's pooled client, HTTP/1.1 over TCP or TLS (rustls, ring,
//! webpki roots), through the proxy the environment names for the upstream if any
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read as curl reads them; operators in
//! mainland China often reach api.anthropic.com through one).
//!
//! It replaced reqwest, which parsed every request's URL twice (request path, redirect policy),
//! matched it against the proxies and cloned and boxed its service stack per call: without it
//! the gateway runs ~20 % fewer instructions per request (`bench/RESULTS.md`). The connection
//! settings are the ones the reqwest client had; SOCKS proxies are not supported (reqwest's
//! `socks` feature was off).

use bytes::Bytes;
use http::uri::Scheme;
use http::Uri;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

pub(super) type Client = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client. `connect_timeout` bounds a whole new connection: TCP, proxy tunnel and TLS.
pub(super) fn client(connect_timeout: Duration, proxy: Arc<Matcher>) -> Result<Client, rustls::Error> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    // also per address, so that one unreachable address of a name does not use up all the time
    tcp.set_connect_timeout(Some(connect_timeout));
    // keepalive probes find pooled connections whose peer is gone (reqwest's defaults)
    tcp.set_keepalive(Some(Duration::from_secs(15)));
    tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
    tcp.set_keepalive_retries(Some(3));
    #[cfg(target_os = "linux")]
    tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_webpki_roots()
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = Arc::new(tls);
    let connector = Connector { direct: HttpsConnector::from((tcp, tls.clone())), tls, proxy, timeout: connect_timeout };
    Ok(hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4096)
        .build(connector))
}

/// An upstream URL, normalised (IDNA host, percent-encoding) by the parser `upstreams` validates
/// base URLs with, as the client takes it.
pub(super) fn parse_uri(url: &str) -> Option<Uri> {
    reqwest::Url::parse(url).ok()?.as_str().parse().ok()
}

/// `uri` with the client's query string (some SDKs send `?beta=true`).
pub(super) fn with_query(uri: &Uri, query: &str) -> Uri {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = format!("{}?{query}", uri.path()).parse().ok();
    // cannot fail: the path is the target's and the query was accepted in the client's URI
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// Polls an upstream body for its next chunk of data (trailers skipped); `None` at its end.
pub(super) fn poll_data(body: &mut Incoming, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, hyper::Error>>> {
    loop {
        return match std::task::ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(data))),
                Err(_trailers) => continue,
            },
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        };
    }
}

/// Whether an upstream error is a timeout: of the connection, or the kernel's on its socket.
pub(super) fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::TimedOut) {
            return true;
        }
        src = s.source();
    }
    false
}

/// Opens upstream connections, directly or through the environment's proxy.
#[derive(Clone)]
pub(super) struct Connector {
    /// TCP, with TLS for `https` URIs (an upstream's or a proxy's)
    direct: HttpsConnector<HttpConnector>,
    tls: Arc<rustls::ClientConfig>,
    proxy: Arc<Matcher>,
    timeout: Duration,
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // of the kind the TCP connect timeout has, so that `is_timeout` sees both
            let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out").into();
            tokio::time::timeout(this.timeout, this.connect(dst)).await.unwrap_or_else(|_| Err(timed_out()))
        })
    }
}

impl Connector {
    async fn connect(mut self, dst: Uri) -> Result<Conn, BoxError> {
        let Some(proxy) = self.proxy.intercept(&dst) else {
            return Ok(Conn { io: MaybeHttpsStream::Http(self.direct.call(dst).await?), proxied: false });
        };
        if dst.scheme() == Some(&Scheme::HTTPS) {
            // TLS with the upstream inside a CONNECT tunnel (itself in TLS for an https:// proxy)
            let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct);
            if let Some(auth) = proxy.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let io = HttpsConnector::from((tunnel, self.tls)).call(dst).await?;
            Ok(Conn { io, proxied: false })
        } else {
            // plain HTTP: requests go to the proxy in absolute form (see `proxy_authorization`)
            let io = self.direct.call(proxy.uri().clone()).await?;
            Ok(Conn { io: MaybeHttpsStream::Http(io), proxied: true })
        }
    }
}

/// The `Proxy-Authorization` every request to `uri` must carry: plain HTTP through a proxy with
/// credentials (a tunnel sends them once, in its CONNECT).
pub(super) fn proxy_authorization(proxy: &Matcher, uri: &Uri) -> Option<http::HeaderValue> {
    if uri.scheme() != Some(&Scheme::HTTP) {
        return None;
    }
    proxy.intercept(uri)?.basic_auth().cloned()
}

/// An upstream connection: TCP or TLS, or TLS in a tunnel through a proxy.
pub(super) struct Conn {
    io: MaybeHttpsStream<MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>>,
    /// plain HTTP to a proxy: the client then writes requests in absolute form
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Credentials in a proxy URL, as `Proxy-Authorization` sends them ("user:p@ss").
    const AUTH: &str = "proxy-authorization: Basic dXNlcjpwQHNz";

    /// A proxy (with credentials in its URL) that reads one request head, answers `reply`, then
    /// reads one more byte; the task returns the head and that byte.
    async fn fake_proxy(reply: &'static str) -> (String, tokio::task::JoinHandle<(String, u8)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://user:p%40ss@{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = vec![];
            while !head.ends_with(b"\r\n\r\n") {
                head.push(s.read_u8().await.unwrap());
            }
            s.write_all(reply.as_bytes()).await.unwrap();
            let next = s.read_u8().await.unwrap_or(0);
            (String::from_utf8(head).unwrap(), next)
        });
        (url, task)
    }

    /// A client whose proxy for every URL is `proxy`, and a POST to `uri` as `forward` makes it.
    fn via(proxy: &str, connect_timeout: Duration, uri: &str) -> (Client, http::Request<Full<Bytes>>) {
        let proxy = Arc::new(Matcher::builder().all(proxy).build());
        let uri: Uri = uri.parse().unwrap();
        let mut req = http::Request::post(uri.clone()).body(Full::new(Bytes::from_static(b"{}"))).unwrap();
        if let Some(auth) = proxy_authorization(&proxy, &uri) {
            req.headers_mut().insert(http::header::PROXY_AUTHORIZATION, auth);
        }
        (client(connect_timeout, proxy).unwrap(), req)
    }

    fn has_line(head: &str, line: &str) -> bool {
        head.lines().any(|l| l.eq_ignore_ascii_case(line))
    }

    #[tokio::test]
    async fn plain_http_goes_to_the_proxy_in_absolute_form() {
        let (proxy, seen) = fake_proxy("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
        let (client, req) = via(&proxy, Duration::from_secs(2), "http://upstream.test:8080/v1/messages?beta=true");
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let (head, _) = seen.await.unwrap();
        assert!(head.starts_with("POST http://upstream.test:8080/v1/messages?beta=true HTTP/1.1\r\n"), "{head}");
        assert!(has_line(&head, AUTH), "{head}");
    }

    #[tokio::test]
    async fn https_goes_through_a_connect_tunnel() {
        let (proxy, seen) = fake_proxy("HTTP/1.1 200 Connection established\r\n\r\n").await;
        let (client, req) = via(&proxy, Duration::from_secs(2), "https://api.example.test/v1/messages");
        assert!(req.headers().get(http::header::PROXY_AUTHORIZATION).is_none(), "credentials go in CONNECT only");
        // the fake proxy is no TLS server: the handshake fails after its first record
        assert!(client.request(req).await.is_err());
        let (head, next) = seen.await.unwrap();
        assert!(head.starts_with("CONNECT api.example.test:443 HTTP/1.1\r\n"), "{head}");
        assert!(has_line(&head, AUTH), "{head}");
        assert_eq!(next, 0x16, "a TLS handshake record follows the tunnel's opening");
    }

    #[tokio::test]
    async fn a_connection_that_stalls_is_a_connect_timeout() {
        // a proxy that accepts connections (the kernel does) and never answers
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = format!("http://{}", silent.local_addr().unwrap());
        let (client, req) = via(&proxy, Duration::from_millis(200), "https://api.example.test/v1/messages");
        let e = client.request(req).await.unwrap_err();
        assert!(e.is_connect() && is_timeout(&e), "{e:?}");
    }

    #[test]
    fn query_is_appended() {
        let uri: Uri = "https://api.example.test/v1/messages".parse().unwrap();
        assert_eq!(with_query(&uri, "beta=true").to_string(), "https://api.example.test/v1/messages?beta=true");
        assert_eq!(parse_uri("https://API.Example.test/x y").unwrap().to_string(), "https://api.example.test/x%20y");
    }
}
