//! `cometbox -t` and config discovery, run through the real binary: the check
//! fails where the start would, shows each key's value and source, and finds
//! the config file by -c, COMETBOX_CONFIG or the search path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cometbox");
const ETC_CONFIG: &str = "/etc/cometbox/gateway.conf";

/// The binary with no `COMETBOX_*` variable inherited from whoever runs the
/// tests, so each test sets exactly the overrides it means.
fn cometbox(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).env("RUST_LOG", "warn");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COMETBOX_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A gateway.conf in a fresh directory: loopback, ephemeral port, the socket
/// beside it, then `extra`.
fn config_dir(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.conf");
    let text = format!(
        "server.bind = \"127.0.0.1\"\nserver.port = 0\nmailbox.backend-socket = \"{}\"\n{extra}",
        dir.path().join("gw.sock").display()
    );
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run cometbox");
    (
        status.success(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

#[test]
fn shipped_gateway_conf_is_valid() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.conf");
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = run(cometbox(dir.path()).arg("-t").arg("-c").arg(&shipped));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("server.port = 8080  ({}:", shipped.display())),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("cometbox: {} is valid\n", shipped.display())),
        "{out}"
    );
}

#[test]
fn missing_secret_file_fails_naming_the_key() {
    let (dir, path) = config_dir("");
    let missing = dir.path().join("jwt.secret");
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!("auth.jwt-secret-file = \"{}\"\n", missing.display());
    std::fs::write(&path, text).unwrap();
    let (ok, out, err) = run(cometbox(dir.path()).args(["-t", "-c"]).arg(&path));
    assert!(!ok, "{out}");
    let want = format!(
        "cometbox: {}:4: auth.jwt-secret-file: cannot read {}",
        path.display(),
        missing.display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert!(!out.contains("is valid"), "{out}");
    // The start refuses the same config with the same message.
    let (ok, _, start_err) = run(cometbox(dir.path()).arg("-c").arg(&path));
    assert!(!ok);
    assert!(start_err.starts_with(&want), "{start_err}");
}

#[test]
fn short_secret_fails_as_the_start_would() {
    let (dir, path) = config_dir("");
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, "short\n").unwrap();
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!(
            "auth.required = \"enable\"\nauth.jwt-secret-file = \"{}\"\n",
            secret.display()
        );
    std::fs::write(&path, text).unwrap();
    let (ok, _, err) = run(cometbox(dir.path()).args(["-t", "-c"]).arg(&path));
    assert!(!ok);
    assert!(
        err.contains("the secret must be at least 32 bytes"),
        "{err}"
    );
    std::fs::write(&secret, format!("{}\n", "s".repeat(44))).unwrap();
    let (ok, out, err) = run(cometbox(dir.path()).args(["-t", "-c"]).arg(&path));
    assert!(ok, "{out}{err}");
}

#[test]
fn env_override_is_shown_with_its_source() {
    let (dir, path) = config_dir("mailbox.max-messages = 10\n");
    let (ok, out, err) = run(cometbox(dir.path())
        .args(["-t", "-c"])
        .arg(&path)
        .env("COMETBOX_SERVER_PORT", "9000")
        .env("COMETBOX_AUTH_COOKIE", "tok"));
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"server.port = 9000  (env COMETBOX_SERVER_PORT)"),
        "{out}"
    );
    assert!(
        lines.contains(&"auth.cookie = \"tok\"  (env COMETBOX_AUTH_COOKIE)"),
        "{out}"
    );
    let from_file = format!("mailbox.max-messages = 10  ({}:4)", path.display());
    assert!(lines.contains(&from_file.as_str()), "{out}");
    assert_eq!(
        lines.last(),
        Some(&format!("cometbox: {} is valid", path.display()).as_str())
    );
}

#[test]
fn invalid_env_value_is_a_clear_error() {
    let (dir, path) = config_dir("");
    let (ok, _, err) = run(cometbox(dir.path())
        .args(["-t", "-c"])
        .arg(&path)
        .env("COMETBOX_SERVER_PORT", "nine"));
    assert!(!ok);
    assert_eq!(
        err,
        "cometbox: env COMETBOX_SERVER_PORT: invalid value for \"server.port\": expected a \
        whole number from 0 to 65535, found the string \"nine\"\n"
    );
    let (ok, _, err) = run(cometbox(dir.path())
        .args(["-t", "-c"])
        .arg(&path)
        .env("COMETBOX_MAILBOX_MAX_MESAGES", "5"));
    assert!(!ok);
    assert!(
        err.contains("did you mean COMETBOX_MAILBOX_MAX_MESSAGES"),
        "{err}"
    );
}

#[test]
fn config_found_without_c() {
    let (dir, path) = config_dir("");
    // COMETBOX_CONFIG names the file, and -c wins over it.
    let (ok, out, err) = run(cometbox(Path::new("/"))
        .arg("-t")
        .env("COMETBOX_CONFIG", &path));
    assert!(ok, "{out}{err}");
    assert!(
        out.ends_with(&format!("{} is valid\n", path.display())),
        "{out}"
    );
    let (ok, _, err) = run(cometbox(Path::new("/"))
        .args(["-t", "-c", "/nonexistent/a.conf"])
        .env("COMETBOX_CONFIG", &path));
    assert!(!ok);
    assert!(err.contains("/nonexistent/a.conf"), "{err}");

    // The search path: ./gateway.conf, unless the packaged file exists,
    // which would be read first.
    if Path::new(ETC_CONFIG).exists() {
        eprintln!("{ETC_CONFIG} exists: search-path assertions skipped");
        return;
    }
    let (ok, out, err) = run(cometbox(dir.path()).arg("-t"));
    assert!(ok, "{out}{err}");
    assert!(
        out.ends_with("cometbox: ./gateway.conf is valid\n"),
        "{out}"
    );
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(cometbox(empty.path()).arg("-t"));
    assert!(!ok);
    assert_eq!(
        err,
        "cometbox: no config file: tried /etc/cometbox/gateway.conf and ./gateway.conf (name \
        one with -c FILE or COMETBOX_CONFIG)\n"
    );
}

#[test]
fn help_names_the_search_order_and_the_env_rule() {
    let (ok, out, _) = run(cometbox(Path::new("/")).arg("--help"));
    assert!(ok);
    assert!(out.contains("$COMETBOX_CONFIG"), "{out}");
    assert!(
        out.contains("/etc/cometbox/gateway.conf and ./gateway.conf"),
        "{out}"
    );
    assert!(out.contains("COMETBOX_SERVER_PORT=9000"), "{out}");
}
