//! Generates the protobuf messages and the tonic client and server of
//! `pipeline.Stage` from the one shared contract,
//! scenarios/pipeline/pipeline.proto. Needs `protoc` on PATH (or the PROTOC
//! environment variable).

const PROTO_DIR: &str = "../../../scenarios/pipeline";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = format!("{PROTO_DIR}/pipeline.proto");
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `bytes` fields as bytes::Bytes: the payload travels from the HTTP
        // body to the next node without being copied into a Vec.
        .bytes(".pipeline")
        .compile_protos(&[proto.as_str()], &[PROTO_DIR])?;
    Ok(())
}
