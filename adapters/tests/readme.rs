//! The README's curl example, run as written (only the port differs) against a real
//! `microbatch run`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_readme_curl_example_works_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let start = readme
        .find("curl -s -X POST")
        .expect("the README has a curl example");
    let end = start
        + readme[start..]
            .find("\n```")
            .expect("the example's code block ends");
    let example = &readme[start..end];
    assert!(example.contains("127.0.0.1:8080"), "{example}");

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_microbatch"))
        .arg("run")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("MICROBATCH_DATA_DIR", data.path())
        .env("MICROBATCH_PRODUCER__LISTEN", format!("127.0.0.1:{port}"))
        .env("MICROBATCH_LOG__FILTER", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let command = example.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let output = loop {
        let out = Command::new("bash").arg("-c").arg(&command).output().unwrap();
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    let body = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        body,
        r#"{"accepted":1,"ids":["readme-1"]}"#,
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        readme.contains(r#"`202 {"accepted":1,"ids":["readme-1"]}`"#),
        "the README states the answer it gets"
    );
    assert!(status.success());
}

#[test]
fn help_names_every_subcommand_and_bad_config_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_microbatch"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "produce", "consume", "import", "demo", "migrate", "check"] {
        assert!(help.contains(&format!("  {sub} ")), "--help lists {sub}:\n{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_microbatch"))
        .args(["--config", "/nonexistent/mb.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "microbatch: configuration: /nonexistent/mb.toml does not exist"
    );
}

#[test]
fn check_reports_a_warehouse_that_lags_the_catalog_and_migrate_fixes_it() {
    let data = tempfile::tempdir().unwrap();
    let run = |sub: &str| {
        Command::new(env!("CARGO_BIN_EXE_microbatch"))
            .arg(sub)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .env("MICROBATCH_DATA_DIR", data.path())
            .env("MICROBATCH_LOG__FILTER", "error")
            .output()
            .unwrap()
    };
    let before = run("check");
    assert!(!before.status.success());
    assert!(
        String::from_utf8_lossy(&before.stdout).contains("warehouse: table \"orders\""),
        "{}",
        String::from_utf8_lossy(&before.stdout)
    );
    assert!(run("migrate").status.success());
    let after = run("check");
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert!(String::from_utf8_lossy(&after.stdout).contains("every catalog table and column is there"));
}
