//! The `cometbox` command: flags in, a config loaded, the gateway run.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cometbox -c FILE        run the gateway with this config
       cometbox -t -c FILE     check the config and exit (0 if valid)
       cometbox --help | --version

Logging: RUST_LOG=debug|info|warn|error (default info).
Docs: README.md and docs/ in the source tree.";

fn main() -> ExitCode {
    let mut config_path: Option<PathBuf> = None;
    let mut test_only = false;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-c") | Some("--config") => match args.next() {
                Some(path) => config_path = Some(PathBuf::from(path)),
                None => return usage_error("-c needs a file name"),
            },
            Some("-t") | Some("--test") => test_only = true,
            Some("-h") | Some("--help") => {
                println!(
                    "cometbox {}: a Comet gateway\n\n{USAGE}",
                    env!("CARGO_PKG_VERSION")
                );
                return ExitCode::SUCCESS;
            }
            Some("-v") | Some("-V") | Some("--version") => {
                println!("cometbox {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            _ => return usage_error(&format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    let Some(config_path) = config_path else {
        return usage_error("no config file given");
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match cometbox::Config::load(&config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cometbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    if test_only {
        println!("cometbox: {} is valid", config_path.display());
        return ExitCode::SUCCESS;
    }
    match cometbox::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("cometbox: {why}\n\n{USAGE}");
    ExitCode::from(2)
}
