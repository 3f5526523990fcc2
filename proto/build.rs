// SPDX-License-Identifier: Apache-2.0
//! Generates the tonic client and server from `nettel/telemetry/v1/telemetry.proto`,
//! with the codec of `src/codec.rs`.
//! Needs `protoc` (Debian: protobuf-compiler) or `PROTOC` pointing at one.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=nettel/telemetry/v1/telemetry.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::SliceCodec")
        // `bytes` fields as `Bytes`: decoded from a message held as `Bytes`
        // (src/codec.rs), an address is a slice of it, not two allocations.
        .bytes(".")
        .compile_protos(&["nettel/telemetry/v1/telemetry.proto"], &["."])?;
    Ok(())
}
