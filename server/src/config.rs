//! Runtime settings, from the environment (with defaults that suit a local run).

use std::net::SocketAddr;

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    /// Where customers reach this server; used in snippets and to decide whether cookies are Secure.
    pub public_url: String,
    /// Encrypts upstream credentials at rest. Required outside development.
    pub secret: String,
    pub addr: SocketAddr,
}

pub const DEV_SECRET: &str = "cloudrouter-development-secret-change-me";

impl Config {
    pub fn from_env(addr: SocketAddr) -> Config {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Config {
            database_url: var("DATABASE_URL").unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/cloudrouter".into()),
            public_url: var("CLOUDROUTER_PUBLIC_URL").unwrap_or_else(|| format!("http://{addr}")),
            secret: var("CLOUDROUTER_SECRET").unwrap_or_else(|| DEV_SECRET.into()),
            addr,
        }
    }

    /// How this instance reaches itself (for the built-in demo upstream).
    pub fn loopback_addr(&self) -> SocketAddr {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        a
    }

    /// Cookies carry `Secure` whenever customers reach us over HTTPS.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}
