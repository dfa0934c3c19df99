//! The built `server` binary as deployed, for tests that need a real process: signals, several
//! instances on one database, a database that restarts under it.

use sqlx::PgPool;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The secret every test process runs with (the server refuses to start without one).
pub const SECRET: &str = "process-test-secret-4f9a2c7e1b8d3a6f";

/// The URL of the test's own database (`pool`'s), as a separate process reaches it.
pub fn database_url(pool: &PgPool) -> String {
    let admin = std::env::var("DATABASE_URL").unwrap();
    let db = pool.connect_options().get_database().unwrap().to_string();
    format!("{}/{db}", &admin[..admin.rfind('/').unwrap()])
}

/// A loopback address nobody listens on now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A running `server`; killed (SIGKILL) when dropped, so a failing test leaves none behind.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl ServerProcess {
    /// `server` on `addr` over `database_url` (migrated by the server itself), with `env` added
    /// to the test secret; does not wait for it to be ready.
    pub fn spawn(database_url: &str, addr: SocketAddr, env: &[(&str, &str)], stdout: Stdio) -> ServerProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_server"))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .env("DATABASE_URL", database_url)
            .env("LEPTOS_SITE_ADDR", addr.to_string())
            .env("CLOUDROUTER_SECRET", SECRET)
            .envs(env.iter().copied())
            .stdout(stdout)
            .spawn()
            .unwrap();
        ServerProcess { addr, child: Some(child) }
    }

    /// [`ServerProcess::spawn`] on a free port, waiting until `/readyz` answers 200.
    pub async fn ready(database_url: &str, env: &[(&str, &str)]) -> ServerProcess {
        let p = ServerProcess::spawn(database_url, free_addr(), env, Stdio::null());
        assert_eq!(wait_ready(p.addr).await, Some(200), "the server became ready");
        p
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill(&mut self) {
        let child = self.child.as_mut().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn sigterm(&self) {
        assert!(Command::new("kill").args(["-TERM", &self.id().to_string()]).status().unwrap().success());
    }

    /// Its exit status once it has exited; None if it still runs after `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        let started = std::time::Instant::now();
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(s);
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and the process's exit status (None if it is still running after 60 s).
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        self.sigterm();
        self.exited(Duration::from_secs(60)).await
    }

    /// The process itself, no longer killed on drop (to read its output to the end).
    pub fn into_child(mut self) -> Child {
        self.child.take().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A GET on a fresh connection (what a load balancer's health check sees); None if refused.
pub async fn probe(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let c = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).timeout(Duration::from_secs(2)).build().unwrap();
    match c.get(format!("http://{addr}{path}")).send().await {
        Ok(r) => Some((r.status().as_u16(), r.text().await.unwrap_or_default())),
        Err(_) => None,
    }
}

/// Waits (up to 30 s) for `/readyz` to answer 200; its last status.
pub async fn wait_ready(addr: SocketAddr) -> Option<u16> {
    let mut up = None;
    for _ in 0..300 {
        up = probe(addr, "/readyz").await.map(|r| r.0);
        if up == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    up
}

pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).into_iter().flatten().map(Result::unwrap) {
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().map(Result::unwrap) {
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// A fresh directory under the system's temp dir, for a process's spool.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cloudrouter-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
