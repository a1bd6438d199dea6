//! Checks of the files a config names, run by `-t` and before the start
//! alike, so that `-t` fails where the start would: each key file must be
//! readable and not empty (and with auth on, parse as the start parses it),
//! and the backend socket's directory must be one the gateway will bind in.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use super::{Config, ConfigError, Loaded};

/// The keys of kind "file" and the fields they set. A test checks that this
/// list and the key table agree.
fn named_files(config: &Config) -> [(&'static str, Option<&Path>); 3] {
    let auth = &config.auth;
    [
        (
            "cluster.redis-password-file",
            config.cluster.redis_password_file.as_deref(),
        ),
        ("auth.jwt-secret-file", auth.jwt_secret_file.as_deref()),
        (
            "auth.jwt-public-key-file",
            auth.jwt_public_key_file.as_deref(),
        ),
    ]
}

impl Loaded {
    /// Checks every file the config names; the error names the key, the path
    /// and where the key was set.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        for (key, path) in named_files(&self.config) {
            if let Some(path) = path {
                check_readable(path).map_err(|m| self.error_at(key, format!("{key}: {m}")))?;
            }
        }
        let auth = &self.config.auth;
        if auth.required {
            // The start's own loader, so that -t accepts exactly the keys the
            // start accepts (secret length, PEM type). It reads the secret
            // file when both are set.
            let key = match auth.jwt_secret_file {
                Some(_) => "auth.jwt-secret-file",
                None => "auth.jwt-public-key-file",
            };
            crate::auth::Auth::from_config(auth).map_err(|m| self.error_at(key, m))?;
        }
        check_socket_path(&self.config.mailbox.backend_socket)
            .map_err(|m| self.error_at("mailbox.backend-socket", m))?;
        if self.config.mailbox.store == super::StoreKind::Disk {
            if self.config.cluster.redis.is_some() {
                // Cluster mode keeps the mail in Redis; a second copy on
                // one node's disk would disagree with it after a restart.
                return Err(self.error_at(
                    "mailbox.store",
                    "mailbox.store = \"disk\" cannot be combined with cluster.redis: in \
                     cluster mode Redis holds the mail (persist it with Redis' own \
                     appendonly); set one or the other"
                        .to_string(),
                ));
            }
            check_store_dir(&self.config.mailbox.store_dir)
                .map_err(|m| self.error_at("mailbox.store-dir", m))?;
        }
        Ok(())
    }

    /// An error located where `key` was set, or in the config file when it
    /// holds its default.
    fn error_at(&self, key: &str, message: String) -> ConfigError {
        match self.settings.iter().find(|s| s.key == key) {
            Some(setting) => setting.source.error(&self.path, message),
            None => ConfigError::in_file(&self.path, message),
        }
    }
}

fn check_readable(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.trim_ascii().is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(())
}

/// What the start checks before it binds the backend socket (server.rs,
/// `bind_backend_socket`), except whether another gateway listens on it:
/// `-t` is often run while the gateway runs. The directory is not created,
/// by the start either.
fn check_socket_path(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let meta = std::fs::metadata(dir).map_err(|e| {
            format!(
                "the directory of the backend socket, {}, cannot be used: {e}",
                dir.display()
            )
        })?;
        if !meta.is_dir() {
            return Err(format!(
                "the directory of the backend socket, {}, is not a directory",
                dir.display()
            ));
        }
        let mode = meta.permissions().mode();
        // In a world-writable directory without the sticky bit anyone could
        // replace the socket with their own and receive the app's messages.
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "{} is world-writable without the sticky bit, so the backend socket would not \
                be safe there (the gateway refuses to start)",
                dir.display()
            ));
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => Err(format!(
            "{} exists and is not a socket; the gateway will not replace it",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// What the start needs of `mailbox.store-dir`: a directory it can write,
/// or one it can create (`-t` creates nothing; the start does).
pub fn check_store_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let mut probe = dir;
    loop {
        match std::fs::metadata(probe) {
            Ok(meta) if !meta.is_dir() => {
                return Err(format!(
                    "mailbox.store-dir {shown} cannot be used: {} is not a directory",
                    probe.display()
                ));
            }
            Ok(_) => break,
            // Missing, or below a file: look at what is above.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match probe.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
                    _ => {
                        probe = Path::new(".");
                        break;
                    }
                }
            }
            Err(e) => return Err(format!("mailbox.store-dir {shown} cannot be used: {e}")),
        }
    }
    if let Err(e) = writable(probe) {
        let what = if probe == dir {
            "cannot be written".to_string()
        } else {
            format!("cannot be created in {}", probe.display())
        };
        return Err(format!(
            "mailbox.store-dir {shown} {what}: {e} (the disk store keeps its log there)"
        ));
    }
    Ok(())
}

/// access(2) with W_OK and X_OK: true for root too, except on a read-only
/// file system, which is what matters here.
fn writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::{KEYS, Kind, Text};
    use crate::config::test_util::TempDir;

    /// `text` in `dir`/gateway.conf, loaded as the binary loads it.
    fn load_in(dir: &TempDir, text: &str) -> Result<Loaded, ConfigError> {
        let socket = format!(
            "mailbox.backend-socket = \"{}\"\n",
            dir.0.join("gw.sock").display()
        );
        let path = dir.write("gateway.conf", &format!("{socket}{text}"));
        Config::load_with_env(&path, std::iter::empty::<(&str, &str)>())
    }

    #[track_caller]
    fn assert_fails(result: Result<Loaded, ConfigError>, line: Option<usize>, needles: &[&str]) {
        let e = result.map(|l| l.config).unwrap_err();
        assert_eq!(e.line(), line, "{e}");
        for needle in needles {
            assert!(e.message().contains(needle), "{e} lacks {needle:?}");
        }
    }

    #[test]
    fn every_file_key_is_checked() {
        let listed: Vec<&str> = named_files(&Config::default())
            .iter()
            .map(|f| f.0)
            .collect();
        for key in KEYS {
            let is_file = matches!(
                key.kind,
                Kind::Str {
                    what: Text::File,
                    ..
                }
            );
            assert_eq!(is_file, listed.contains(&key.name), "{}", key.name);
        }
    }

    #[test]
    fn missing_or_empty_key_files() {
        let dir = TempDir::new("files");
        let missing = dir.0.join("nope.secret");
        let text = format!("\nauth.jwt-secret-file = \"{}\"\n", missing.display());
        // Refused even with auth off: the start would fail once it is on.
        assert_fails(
            load_in(&dir, &text),
            Some(3),
            &["auth.jwt-secret-file", "cannot read", "nope.secret"],
        );
        dir.write("empty.pem", "\n\n");
        let text = format!(
            "auth.jwt-public-key-file = \"{}\"\n",
            dir.0.join("empty.pem").display()
        );
        assert_fails(
            load_in(&dir, &text),
            Some(2),
            &["auth.jwt-public-key-file", "is empty"],
        );
        // A directory is not a key file.
        let text = format!("auth.jwt-secret-file = \"{}\"\n", dir.0.display());
        assert_fails(load_in(&dir, &text), Some(2), &["cannot read"]);
    }

    #[test]
    fn key_files_are_parsed_as_the_start_parses_them() {
        let dir = TempDir::new("keys");
        let short = dir.write("short.secret", "too short\n");
        let text = format!(
            "auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\n",
            short.display()
        );
        assert_fails(load_in(&dir, &text), Some(3), &["at least 32 bytes"]);
        let pem = dir.write("bad.pem", "-----BEGIN PUBLIC KEY-----\nnope\n");
        let text = format!(
            "auth.required = \"enable\"\nauth.jwt-public-key-file = \"{}\"\n",
            pem.display()
        );
        assert_fails(
            load_in(&dir, &text),
            Some(3),
            &["not an RSA or EC public key"],
        );
        let good = dir.write("good.secret", &format!("{}\n", "k".repeat(32)));
        let text = format!(
            "auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\n",
            good.display()
        );
        load_in(&dir, &text).unwrap();
    }

    #[test]
    fn backend_socket_directory() {
        let dir = TempDir::new("socket");
        load_in(&dir, "").unwrap();
        let text = format!(
            "mailbox.backend-socket = \"{}\"\n",
            dir.0.join("no/such/dir/gw.sock").display()
        );
        assert_fails(
            load_in(&dir, &text),
            Some(2),
            &["directory of the backend socket", "no/such/dir"],
        );
        let file = dir.write("plain", "x");
        let text = format!("mailbox.backend-socket = \"{}\"\n", file.display());
        assert_fails(load_in(&dir, &text), Some(2), &["is not a socket"]);
        let open = dir.0.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let text = format!(
            "mailbox.backend-socket = \"{}\"\n",
            open.join("s").display()
        );
        assert_fails(
            load_in(&dir, &text),
            Some(2),
            &["world-writable without the sticky bit"],
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        load_in(&dir, &text).unwrap();
        // A relative socket path lives in the working directory.
        load_in(&dir, "mailbox.backend-socket = \"gw.sock\"\n").unwrap();
    }

    #[test]
    fn file_errors_from_the_environment_name_the_variable() {
        let dir = TempDir::new("envfile");
        let path = dir.write("gateway.conf", "");
        let e = Config::load_with_env(
            &path,
            [(
                "COMETBOX_AUTH_JWT_SECRET_FILE",
                dir.0.join("gone").to_str().unwrap(),
            )],
        )
        .unwrap_err();
        assert_eq!(e.env_var(), Some("COMETBOX_AUTH_JWT_SECRET_FILE"), "{e}");
        assert!(
            e.to_string().starts_with(
                "env COMETBOX_AUTH_JWT_SECRET_FILE: auth.jwt-secret-file: cannot read"
            ),
            "{e}"
        );
    }
}
