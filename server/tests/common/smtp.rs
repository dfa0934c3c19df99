//! A real SMTP server for the tests (RFC 5321's plain dialogue, no TLS or AUTH): the server
//! under test mails it over TCP exactly as it would mail a provider, and the tests read what
//! arrived.

use base64::Engine;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One message as delivered: the envelope and the raw data.
#[derive(Clone, Debug)]
pub struct Received {
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string()))
    }

    /// The text body (the server sends base64 plain text).
    pub fn text(&self) -> String {
        let body: String = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b).split_whitespace().collect();
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(body).expect("a base64 body")).expect("UTF-8 text")
    }

    /// The token of the first link to `path` in the body (`…{path}?token=T`).
    pub fn token(&self, path: &str) -> Option<String> {
        let text = self.text();
        let at = text.find(&format!("{path}?token="))? + path.len() + "?token=".len();
        Some(text[at..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect())
    }
}

#[derive(Clone)]
pub struct SmtpServer {
    pub url: String,
    inbox: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = SmtpServer {
            url: format!("smtp://{}", listener.local_addr().unwrap()),
            inbox: Arc::default(),
            arrived: Arc::default(),
        };
        let (inbox, arrived) = (server.inbox.clone(), server.arrived.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (inbox, arrived) = (inbox.clone(), arrived.clone());
                tokio::spawn(async move {
                    let _ = session(socket, inbox, arrived).await;
                });
            }
        });
        server
    }

    /// Everything delivered to `to` so far.
    pub fn to(&self, to: &str) -> Vec<Received> {
        self.inbox.lock().unwrap().iter().filter(|m| m.to.iter().any(|r| r.eq_ignore_ascii_case(to))).cloned().collect()
    }

    /// Waits (up to 10 s) until `to` has received `n` messages; returns the `n`-th.
    pub async fn nth_to(&self, to: &str, n: usize) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.arrived.notified();
            if let Some(m) = self.to(to).into_iter().nth(n - 1) {
                return m;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("no mail #{n} to {to} within 10 s (have {})", self.to(to).len());
            }
        }
    }

}

async fn session(socket: tokio::net::TcpStream, inbox: Arc<Mutex<Vec<Received>>>, arrived: Arc<Notify>) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 test-smtp ESMTP ready\r\n").await?;
    let mut to = vec![];
    while let Some(line) = lines.next_line().await? {
        let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-test-smtp\r\n250 8BITMIME\r\n",
            "HELO" | "NOOP" => b"250 OK\r\n",
            "MAIL" => {
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                let addr = line.split_once(':').map_or("", |(_, a)| a).trim().trim_start_matches('<');
                to.push(addr.split('>').next().unwrap_or("").to_string());
                b"250 OK\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                while let Some(l) = lines.next_line().await? {
                    if l == "." {
                        break;
                    }
                    // dot-stuffing (RFC 5321 4.5.2)
                    data.push_str(l.strip_prefix('.').filter(|_| l.starts_with("..")).unwrap_or(&l));
                    data.push_str("\r\n");
                }
                inbox.lock().unwrap().push(Received { to: std::mem::take(&mut to), data });
                arrived.notify_waiters();
                b"250 OK queued\r\n"
            }
            "RSET" => {
                to.clear();
                b"250 OK\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
    Ok(())
}
