//! Shared pieces of the notes-grpc server and client: the generated gRPC code
//! and the loader for the scenario's notes file.

pub mod pb {
    tonic::include_proto!("notes");
}

pub mod store;
