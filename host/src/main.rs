//! The `yolo-edge` binary; see [`yolo_edge::cli`].

fn main() -> std::process::ExitCode {
    match yolo_edge::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
