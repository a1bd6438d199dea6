//! The `cometbox` command: flags in, a config loaded, the gateway run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cometbox::Config;

const USAGE: &str = "\
usage: cometbox [-c FILE]      run the gateway with this config
       cometbox -t [-c FILE]   check the config as a start would, print every
                               key set and where, and exit (0 if valid)
       cometbox --help | --version

The config file is -c FILE, else $COMETBOX_CONFIG, else the first that
exists of /etc/cometbox/gateway.conf and ./gateway.conf.

Any key can be set from the environment: COMETBOX_ and the key in capitals
with '.' and '-' as '_', e.g. COMETBOX_SERVER_PORT=9000 for server.port.
It wins over the file.

Logging: RUST_LOG=debug|info|warn|error (default info).
Docs: README.md and docs/configuration.md in the source tree.";

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
    // RUST_LOG, when set, decides (and SIGHUP leaves it be); otherwise
    // everything passes env_logger and `server.log-level` sets the level.
    if std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty()) {
        env_logger::Builder::from_env(env_logger::Env::default()).init();
    } else {
        env_logger::Builder::new()
            .filter_level(log::LevelFilter::Trace)
            .init();
        log::set_max_level(log::LevelFilter::Info);
    }
    // A file that cannot be probed (a directory we may not search) counts as
    // present, so the error says why it cannot be read.
    let exists = |p: &Path| !matches!(p.try_exists(), Ok(false));
    let loaded = Config::find(config_path, std::env::var_os("COMETBOX_CONFIG"), exists)
        .and_then(|path| Config::load_with_env(&path, std::env::vars_os()));
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("cometbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    loaded.warnings.iter().for_each(|w| log::warn!("{w}"));
    cometbox::gateway::apply_log_level(loaded.config.server.log_level.as_deref());
    if test_only {
        for setting in &loaded.settings {
            println!("{setting}");
        }
        println!("cometbox: {} is valid", loaded.path.display());
        return ExitCode::SUCCESS;
    }
    match cometbox::gateway::run_loaded(loaded) {
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
