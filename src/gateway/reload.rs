//! SIGHUP: read the config again, through the same checks as `cometbox -t`
//! and a start ([`Config::load_with_env`], then the token keys), and swap
//! it in for every request that starts from now on. Nothing is closed:
//! held polls, streams and WebSockets carry on, and pick up the new limits,
//! CORS origins and keys at their next request or deadline. An invalid file
//! changes nothing; keys that only a restart can change are logged and
//! keep their running value.

use std::path::PathBuf;
use std::sync::Arc;

use log::{LevelFilter, error, info, warn};

use crate::auth::Auth;
use crate::config::{Config, Setting, changed_keys};
use crate::metrics;
use crate::shared::Shared;

/// What a reload needs to know about the last load.
pub struct Reloader {
    /// The file the gateway was started from; `None` when embedded.
    pub path: Option<PathBuf>,
    /// The keys set by the last load applied, to tell what changed.
    pub settings: Vec<Setting>,
}

impl Reloader {
    pub fn reload(&mut self, shared: &Shared) {
        let Some(path) = self.path.clone() else {
            warn!("SIGHUP: this gateway was started without a config file; nothing to reload");
            return;
        };
        let refuse = |why: String| {
            metrics::inc(&shared.metrics.reloads_failed);
            error!("config reload refused, still running with the previous config: {why}");
        };
        let loaded = match Config::load_with_env(&path, std::env::vars_os()) {
            Ok(loaded) => loaded,
            Err(e) => return refuse(e.to_string()),
        };
        let auth = match Auth::from_config(&loaded.config.auth) {
            Ok(auth) => auth,
            Err(e) => return refuse(e),
        };
        loaded.warnings.iter().for_each(|w| warn!("{w}"));
        let running = shared.config.load_full();
        let mut config = loaded.config;
        let kept = config.keep_restart_only(&running);
        for key in &kept {
            warn!(
                "config reload: {key} changed, but only a restart applies it; still running with the value read at start"
            );
        }
        let changed: Vec<&str> = changed_keys(&self.settings, &loaded.settings)
            .into_iter()
            .filter(|k| !kept.contains(k))
            .collect();
        apply_log_level(config.server.log_level.as_deref());
        shared.config.store(Arc::new(config));
        // Always swapped: a key file may have changed under the same name.
        shared.auth.store(auth.map(Arc::new));
        self.settings = loaded.settings;
        metrics::inc(&shared.metrics.reloads_ok);
        info!(
            "config reloaded from {}: {} applied without closing connections{}",
            path.display(),
            match changed.len() {
                0 => "no key changed; token keys re-read and".to_string(),
                _ => format!("{} changed and", changed.join(", ")),
            },
            if kept.is_empty() {
                String::new()
            } else {
                format!("; needs a restart: {}", kept.join(", "))
            }
        );
    }
}

/// `server.log-level`, unless RUST_LOG was set (then it rules, as at start).
pub fn apply_log_level(level: Option<&str>) {
    if std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty()) {
        return;
    }
    let filter = match level {
        Some("error") => LevelFilter::Error,
        Some("warn") => LevelFilter::Warn,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        _ => LevelFilter::Info,
    };
    log::set_max_level(filter);
}
