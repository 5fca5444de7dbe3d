//! `load-shed-api`: loads the configuration (exit 2 on any mistake), then serves its role until
//! SIGTERM or SIGINT. `load-shed-api check [URL]` probes a running api instead.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::ExitCode;

use load_shed_api::settings::Settings;
use load_shed_api::startup::Application;

const USAGE: &str = "usage: load-shed-api            serve the configured role (LOAD_SHED__ROLE)
       load-shed-api check [URL]  probe a running api: /healthz then /client (default http://127.0.0.1:8080)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => serve(),
        ["check"] => check("http://127.0.0.1:8080"),
        ["check", url] => check(url),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let system = actix_web::rt::System::new();
    let result = system.block_on(async move {
        let app = Application::build(&settings)?;
        if let Some(addr) = app.api_addr() {
            println!("listening role=api addr={addr}");
        }
        if let Some(addr) = app.upstream_addr() {
            println!("listening role=upstream addr={addr}");
        }
        app.run_until_stopped(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-shed-api: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            log::warn!("cannot listen for SIGTERM ({e}); only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn check(url: &str) -> ExitCode {
    match load_shed_api::check::run(url) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            println!("check passed");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("check failed: {why}");
            ExitCode::FAILURE
        }
    }
}
