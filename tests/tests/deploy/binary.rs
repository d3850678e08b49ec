//! The real binary's command line: `serve --help`, and whether it parses given arguments.

use std::process::Command;
use std::sync::OnceLock;

use yolo_edge_tests::host_binary;

pub(crate) fn serve_help() -> &'static str {
    static HELP: OnceLock<String> = OnceLock::new();
    HELP.get_or_init(|| {
        let bin = host_binary();
        assert!(bin.is_file(), "{} is missing: run the tests with `cargo xtask test`", bin.display());
        let out = Command::new(&bin).args(["serve", "--help"]).output().expect("run yolo-edge serve --help");
        assert!(out.status.success(), "serve --help failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8 help")
    })
}

/// Whether `serve --help` lists `flag` (a whole option name, not a prefix of another).
pub(crate) fn accepts_flag(flag: &str) -> bool {
    serve_help().lines().any(|l| l.trim_start().split([',', ' ']).any(|word| word == flag))
}

/// Whether the binary reads the environment variable `name` (clap's `[env: NAME=]`, or named
/// in an option's documented default such as `$YOLO_EDGE_CONFIG`).
pub(crate) fn reads_env(name: &str) -> bool {
    serve_help().contains(&format!("[env: {name}=")) || serve_help().contains(&format!("${name}"))
}

/// `yolo-edge ARGS --help`: clap parses (and validates) every argument before `--help`.
pub(crate) fn parses(args: &[String]) -> Result<(), String> {
    let out = Command::new(host_binary()).args(args).arg("--help").output().expect("run yolo-edge");
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}
