//! The `stratum` command.

/// `pub` for the `stratum-failpoints` example, which is this same program built with the
/// `failpoints` feature.
pub fn main() {
    stratum_prepare_root::fatal::abort_on_panic();
    // Only with the `failpoints` feature: configures failpoints from `FAILPOINTS` (see
    // `stratum::failpoint`). The scenario is never torn down: the process exits with it.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match stratum::cli::run(std::env::args_os()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
