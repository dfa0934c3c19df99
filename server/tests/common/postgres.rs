//! A Postgres server of the test's own (initdb into a temp dir, on a free port), so that a test
//! can stop and start the real database process under load without touching the shared one.

use std::path::PathBuf;
use std::process::Command;

pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    /// initdb and start; the `postgres` superuser with trust auth on 127.0.0.1:`port`.
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = std::env::temp_dir().join(format!("cloudrouter-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = super::process::free_addr().port();
        let pg = PrivatePostgres { dir, bin, port };
        if is_root() {
            // Postgres refuses to run as root: the cluster belongs to the postgres user
            assert!(Command::new("chown").arg("postgres").arg(&pg.dir).status().unwrap().success());
        }
        let data = pg.data();
        pg.run("initdb", &["-A", "trust", "-U", "postgres", "--no-sync", "-D", &data]);
        pg.start_server();
        pg
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server the hard way (`immediate`: connections cut, no checkpoint, as a crash).
    pub fn stop(&self) {
        let out = self.stop_output();
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn stop_output(&self) -> std::process::Output {
        self.output("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"])
    }

    pub fn start_server(&self) {
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off", self.port, self.dir.display());
        let log = self.dir.join("log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "start"]);
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn output(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(tool);
        if is_root() {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&exe).args(args).output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.output(tool, args);
        assert!(out.status.success(), "{tool} {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // it may be stopped already
        let _ = self.stop_output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
