//! Generates the `lightcl.v1` code with protox (no `protoc` binary needed) and writes the
//! descriptor set used by gRPC reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = ["lightcl/v1/types.proto", "lightcl/v1/bus.proto", "lightcl/v1/control.proto"];
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("lightcl_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
