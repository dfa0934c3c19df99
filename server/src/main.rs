use cloudrouter_core::{accounts, db};
use server::cli::{self, Command};
use server::config::Config;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()))
        .init();
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
    let pool = db::connect(&config.database_url).await?;
    db::migrate(&pool).await?;
    match command {
        Command::AdminCreate { email, password } => {
            let user = accounts::ensure_staff(&pool, &email, &password).await?;
            println!("staff account ready: {} ({})", user.email, user.id);
        }
        Command::AdminToken { email } => {
            let token = cloudrouter_core::admin_api::issue_token(&pool, &email).await?;
            println!("{token}");
            eprintln!("staff API token for {email}: send it as `Authorization: Bearer <token>` to /api/admin/v1 (shown once)");
        }
        Command::Serve => server::serve(pool, config, leptos).await?,
        Command::Help => unreachable!(),
    }
    Ok(())
}
