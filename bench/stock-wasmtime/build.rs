//! Find ONNX Runtime at run time next to where the set-up laid it out (rpath).
fn main() {
    if let Ok(root) = std::env::var("ORT_LIB_LOCATION") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{root}/lib");
    }
}
