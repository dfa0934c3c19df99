//! What the bench binaries share: their arguments and their
//! lifetime (a bench script keeps a pipe open on stdin and closes it to stop them).

use tokio::io::AsyncReadExt;

/// The value after `name` on the command line.
pub fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// Resolves when stdin reaches its end (or fails).
pub async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}
