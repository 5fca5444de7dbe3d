//! `load-shed-api`: loads the configuration (exit 2 on any mistake), then serves its role until
//! SIGTERM or SIGINT. `load-shed-api check [URL]` probes a running api instead.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::ExitCode;

use load_shed_api::settings::Settings;
use load_shed_api::startup::{Application, Signal};
use load_shed_api::QuietInjectedResets;

const USAGE: &str = "usage: load-shed-api            serve the configured role (LOAD_SHED__ROLE)
       load-shed-api check [URL]  probe a running api: /healthz then /client (default http://127.0.0.1:8080)
       load-shed-api admin ...    talk to the admin listener (load-shed-api admin --help)";

/// mimalloc instead of glibc's malloc, because a hop allocates and frees many small blocks and
/// mimalloc does that with fewer instructions; `no_thp`, because transparent huge pages under its
/// arenas would triple the idle RSS. The measurements: docs/performance.md, "Where a hop goes".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        ["admin", "-h" | "--help" | "help"] => {
            println!("{}", load_shed_api::admin::cli::USAGE);
            ExitCode::SUCCESS
        }
        ["admin", rest @ ..] => admin(rest),
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
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let level = logger.filter();
    if log::set_boxed_logger(Box::new(QuietInjectedResets(logger))).is_ok() {
        log::set_max_level(level);
    }
    let system = actix_web::rt::System::new();
    let result = system.block_on(async move {
        // Listening before the listeners exist: a signal that arrives as soon as the process
        // says it is up must stop it cleanly, not kill it.
        let shutdown = shutdown_signal();
        let app = Application::build(&settings)?;
        if let Some(addr) = app.api_addr() {
            println!("listening role=api addr={addr}");
        }
        if let Some(addr) = app.upstream_addr() {
            println!("listening role=upstream addr={addr}");
        }
        app.run_until_stopped(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-shed-api: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on the first of them,
/// saying which.
fn shutdown_signal() -> impl std::future::Future<Output = Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Interrupt,
            },
            (term, int) => {
                let e = term
                    .err()
                    .or(int.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                log::warn!("cannot listen for SIGTERM or SIGINT ({e}); using SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
                Signal::Interrupt
            }
        }
    }
}

fn admin(args: &[&str]) -> ExitCode {
    use load_shed_api::admin::cli::{run, Failed};
    match run(args) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(Failed::Usage(why)) => {
            eprintln!("{why}");
            ExitCode::from(2)
        }
        Err(Failed::Request(why)) => {
            eprintln!("{why}");
            ExitCode::FAILURE
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
