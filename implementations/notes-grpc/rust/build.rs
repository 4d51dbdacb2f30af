//! Generates the protobuf messages and the tonic client/server from the one
//! shared contract, scenarios/notes-grpc/notes.proto. Needs `protoc` on PATH
//! (or the PROTOC environment variable).

const PROTO_DIR: &str = "../../../scenarios/notes-grpc";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = format!("{PROTO_DIR}/notes.proto");
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[proto.as_str()], &[PROTO_DIR])?;
    Ok(())
}
