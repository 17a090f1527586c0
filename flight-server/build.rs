//! Generates the Zerobus service from `proto/zerobus.proto`, compiled by
//! protox (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/zerobus.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        // Record payloads stay slices of the received message.
        .bytes(".databricks.zerobus")
        .compile_fds(descriptors)?;
    Ok(())
}
