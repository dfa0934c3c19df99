//! Command line: `server` serves; `server admin create --email E --password P` makes (or
//! promotes) a staff account; `server admin token --email E [--days N]` issues a staff API token,
//! `--list` lists them and `--revoke <id-or-prefix>` revokes one;
//! `server secret rotate [--new-file F]` re-encrypts upstream credentials under a new secret.

#[derive(Debug, PartialEq)]
pub enum Command {
    Serve,
    AdminCreate { email: String, password: String },
    /// `days`: the token's lifetime (the default, 90 days, when None).
    AdminToken { email: String, days: Option<i64> },
    AdminTokenList,
    AdminTokenRevoke { token: String },
    /// The new secret from this file, else from `CLOUDROUTER_NEW_SECRET`; the current one from
    /// `CLOUDROUTER_SECRET`.
    SecretRotate { new_file: Option<String> },
    Help,
}

pub const USAGE: &str = "usage:
  server                                        serve the console and the gateway
  server admin create --email E --password P    create a staff account, or promote an existing one
  server admin token --email E [--days N]       issue a token for the staff API (/api/admin/v1), living N days (90)
  server admin token --list                     list staff API tokens (prefix, owner, dates; never the token)
  server admin token --revoke ID-OR-PREFIX      revoke a staff API token
  server secret rotate [--new-file F]           re-encrypt every upstream credential from CLOUDROUTER_SECRET to the
                                                secret in F (or CLOUDROUTER_NEW_SECRET), all or nothing";

pub fn parse(args: &[String]) -> Result<Command, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let flag = |name: &str| -> Result<String, String> {
        let at = words.iter().position(|w| *w == name).ok_or_else(|| format!("missing {name}"))?;
        words.get(at + 1).map(|v| v.to_string()).ok_or_else(|| format!("{name} needs a value"))
    };
    match words.as_slice() {
        [] | ["serve"] => Ok(Command::Serve),
        ["help"] | ["--help"] | ["-h"] => Ok(Command::Help),
        ["admin", "create", ..] => Ok(Command::AdminCreate { email: flag("--email")?, password: flag("--password")? }),
        ["admin", "token", "--list"] => Ok(Command::AdminTokenList),
        ["admin", "token", "--revoke", token] => Ok(Command::AdminTokenRevoke { token: token.to_string() }),
        ["admin", "token", ..] => {
            let days = match words.contains(&"--days") {
                true => Some(flag("--days")?.parse().map_err(|_| "--days needs a whole number of days".to_string())?),
                false => None,
            };
            Ok(Command::AdminToken { email: flag("--email")?, days })
        }
        ["secret", "rotate"] => Ok(Command::SecretRotate { new_file: None }),
        ["secret", "rotate", ..] => Ok(Command::SecretRotate { new_file: Some(flag("--new-file")?) }),
        _ => Err(format!("unknown command: {}", words.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_admin_commands() {
        assert_eq!(parse(&args("")), Ok(Command::Serve));
        assert_eq!(
            parse(&args("admin create --email a@b.co --password pw")),
            Ok(Command::AdminCreate { email: "a@b.co".into(), password: "pw".into() })
        );
        assert_eq!(parse(&args("admin token --email a@b.co")), Ok(Command::AdminToken { email: "a@b.co".into(), days: None }));
        assert_eq!(parse(&args("admin token --email a@b.co --days 7")), Ok(Command::AdminToken { email: "a@b.co".into(), days: Some(7) }));
        assert!(parse(&args("admin token --email a@b.co --days soon")).is_err());
        assert_eq!(parse(&args("admin token --list")), Ok(Command::AdminTokenList));
        assert_eq!(parse(&args("admin token --revoke cra-abc123")), Ok(Command::AdminTokenRevoke { token: "cra-abc123".into() }));
        assert!(parse(&args("admin create --email")).is_err());
        assert_eq!(parse(&args("secret rotate")), Ok(Command::SecretRotate { new_file: None }));
        assert_eq!(parse(&args("secret rotate --new-file s.txt")), Ok(Command::SecretRotate { new_file: Some("s.txt".into()) }));
        assert!(parse(&args("secret rotate --new-file")).is_err());
        assert!(parse(&args("frobnicate")).is_err());
    }
}
