use cloudrouter_core::{accounts, admin_api, db};
use server::cli::{self, Command};
use server::config::Config;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    // CLOUDROUTER_LOG_FORMAT: `text` (default) or `json`, one object per line for a log pipeline
    match std::env::var("CLOUDROUTER_LOG_FORMAT").ok().filter(|v| !v.is_empty()).as_deref() {
        None | Some("text") => tracing_subscriber::fmt().with_env_filter(filter).init(),
        Some("json") => tracing_subscriber::fmt().json().flatten_event(true).with_current_span(false).with_env_filter(filter).init(),
        Some(other) => {
            eprintln!("CLOUDROUTER_LOG_FORMAT={other:?} is not `text` or `json`");
            return ExitCode::from(2);
        }
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    let leptos = leptos::prelude::get_configuration(Some("Leptos.toml"))?.leptos_options;
    let config = Config::from_env(leptos.site_addr);
    if command == Command::Help {
        println!("{}", cli::USAGE);
        return Ok(());
    }
    let pool = db::connect(&config.database_url, config.db_pool_size).await?;
    db::migrate(&pool).await?;
    match command {
        Command::AdminCreate { email, password } => {
            let user = accounts::ensure_staff(&pool, &email, &password).await?;
            println!("staff account ready: {} ({})", user.email, user.id);
        }
        Command::AdminToken { email, days } => {
            let token = admin_api::issue_token(&pool, &email, days).await?;
            println!("{token}");
            let days = days.unwrap_or(admin_api::DEFAULT_TOKEN_DAYS);
            eprintln!("staff API token for {email}, valid {days} days: send it as `Authorization: Bearer <token>` to /api/admin/v1 (shown once)");
        }
        Command::AdminTokenList => {
            let day = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M").to_string();
            for t in admin_api::list_tokens(&pool).await? {
                let state = match (t.revoked_at, t.expires_at <= chrono::Utc::now()) {
                    (Some(r), _) => format!("revoked {}", day(r)),
                    (None, true) => "expired".to_string(),
                    (None, false) => "active".to_string(),
                };
                let used = t.last_used_at.map_or_else(|| "never".to_string(), day);
                println!("{}  {}  {}  created {}  last used {used}  expires {}  {state}", t.prefix, t.id, t.owner_email, day(t.created_at), day(t.expires_at));
            }
        }
        Command::AdminTokenRevoke { token } => {
            let t = admin_api::revoke_token(&mut *pool.acquire().await?, &token).await?;
            println!("revoked {} ({}, {})", t.prefix, t.id, t.owner_email);
        }
        Command::SecretRotate { new_file } => rotate_secret(&pool, &config, new_file.as_deref()).await?,
        Command::Serve => server::serve(pool, config, leptos).await?,
        Command::Help => unreachable!(),
    }
    Ok(())
}

/// Re-encrypts every upstream credential and two-factor secret from `CLOUDROUTER_SECRET` to the new secret (read from
/// a file or `CLOUDROUTER_NEW_SECRET`, never from the command line, where `ps` would show it).
async fn rotate_secret(pool: &sqlx::PgPool, config: &Config, new_file: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    use cloudrouter_core::crypto::Crypto;
    if config.secret.trim().is_empty() {
        return Err("CLOUDROUTER_SECRET (the current secret) is not set".into());
    }
    let new = match new_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read the new secret from {path}: {e}"))?,
        None => std::env::var("CLOUDROUTER_NEW_SECRET").map_err(|_| "give the new secret with --new-file F or CLOUDROUTER_NEW_SECRET")?,
    };
    let new = new.trim();
    if let Some(why) = server::config::secret_weakness(new) {
        return Err(format!("the new secret is refused: {why}").into());
    }
    if new == config.secret {
        return Err("the new secret is the current one".into());
    }
    let done = cloudrouter_core::upstreams::reencrypt_credentials(pool, &Crypto::from_secret(&config.secret), &Crypto::from_secret(new)).await?;
    println!(
        "{} upstream credential(s), {} two-factor secret(s) and {} alert webhook secret(s) re-encrypted under the new secret.",
        done.credentials, done.two_factor, done.webhooks
    );
    eprintln!("Restart every instance with the new secret as CLOUDROUTER_SECRET (running ones cannot read the credentials any more).");
    Ok(())
}
