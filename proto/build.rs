//! Generates the wattprint.v1 code with protox (a pure-Rust protobuf compiler): no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "wattprint/v1/ingest.proto",
        "wattprint/v1/bus.proto",
        "wattprint/v1/query.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
