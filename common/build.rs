//! Compiles proto/nexd.proto with protox (pure Rust, no system protoc) and tonic-prost-build.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/nexd.proto");
    let fds = protox::compile(["nexd.proto"], ["../proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Served by gRPC reflection, so grpcurl works against the socket.
    std::fs::write(out.join("nexd_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
