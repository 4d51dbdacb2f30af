//! Loading the .proto at start-up (protox, no protoc needed), finding the
//! method, and turning JSON request data into pre-framed protobuf bytes.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use crate::frame::frame_message;

/// What the loader needs to know about the called method.
#[derive(Debug, Clone)]
pub struct MethodInfo {
    /// "/package.Service/Method"
    pub path: String,
    pub server_streaming: bool,
    pub input: MessageDescriptor,
}

/// Compiles `proto` with the given import paths. The proto's own directory
/// is added as the last import path, so a lone file works without any.
pub fn load_pool(proto: &Path, import_paths: &[PathBuf]) -> Result<DescriptorPool, String> {
    if let Err(e) = std::fs::metadata(proto) {
        return Err(format!("cannot read proto file {}: {e}", proto.display()));
    }
    let mut includes: Vec<PathBuf> = import_paths.to_vec();
    let parent = match proto.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !includes.iter().any(|p| same_dir(p, &parent)) {
        includes.push(parent);
    }
    let mut compiler =
        protox::Compiler::new(&includes).map_err(|e| format!("cannot load proto file {}: {e}", proto.display()))?;
    compiler
        .open_file(proto)
        .map_err(|e| format!("cannot compile proto file {}: {e}", proto.display()))?;
    Ok(compiler.descriptor_pool())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Finds `package.Service.Method` (or `package.Service/Method`).
pub fn find_method(pool: &DescriptorPool, call: &str) -> Result<MethodInfo, String> {
    let call = call.trim().trim_start_matches('/');
    let (service, method) = match call.rfind('/') {
        Some(p) => (&call[..p], &call[p + 1..]),
        None => match call.rfind('.') {
            Some(p) => (&call[..p], &call[p + 1..]),
            None => return Err(format!("--call {call:?}: expected package.Service.Method")),
        },
    };
    let svc = pool.get_service_by_name(service).ok_or_else(|| {
        let known: Vec<String> = pool.services().map(|s| s.full_name().to_string()).collect();
        format!("unknown service {service:?} (the proto defines: {})", list_or_none(&known))
    })?;
    let m = svc.methods().find(|m| m.name() == method).ok_or_else(|| {
        let known: Vec<String> = svc.methods().map(|m| m.name().to_string()).collect();
        format!("unknown method {method:?} in service {service} (it has: {})", list_or_none(&known))
    })?;
    if m.is_client_streaming() {
        return Err(format!(
            "method {}.{} is {} streaming; only unary and server-streaming methods are supported",
            svc.full_name(),
            m.name(),
            if m.is_server_streaming() { "bidirectional" } else { "client" }
        ));
    }
    Ok(MethodInfo {
        path: format!("/{}/{}", svc.full_name(), m.name()),
        server_streaming: m.is_server_streaming(),
        input: m.input(),
    })
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Encodes one JSON value (proto3 JSON mapping) as a message of type `desc`.
pub fn encode_json(desc: &MessageDescriptor, value: &serde_json::Value) -> Result<Vec<u8>, String> {
    let msg = DynamicMessage::deserialize(desc.clone(), value).map_err(|e| e.to_string())?;
    Ok(msg.encode_to_vec())
}

/// Turns request data (a JSON array of messages, or one JSON object) into
/// gRPC-framed messages, each encoded once. `what` names the source in errors.
pub fn encode_requests(desc: &MessageDescriptor, json: &[u8], what: &str) -> Result<Vec<Bytes>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("{what}: not valid JSON: {e}"))?;
    let items: Vec<&serde_json::Value> = match &value {
        serde_json::Value::Array(a) => a.iter().collect(),
        serde_json::Value::Object(_) => vec![&value],
        _ => return Err(format!("{what}: expected a JSON object or an array of objects")),
    };
    if items.is_empty() {
        return Err(format!("{what}: the array is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            encode_json(desc, v)
                .map(|b| frame_message(&b))
                .map_err(|e| format!("{what}: message {i} is not a valid {}: {e}", desc.full_name()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROTO: &str = r#"
syntax = "proto3";
package t.v1;
message Title { string title = 1; }
message Author { string nickname = 1; string mail = 2; }
message Big { int64 n = 1; repeated uint32 xs = 2; Author who = 3; bool flag = 4; bytes raw = 5; }
message Note { string title = 1; }
service Board {
  rpc Get(Title) returns (Note);
  rpc List(Author) returns (stream Note);
  rpc Up(stream Note) returns (Note);
  rpc Chat(stream Note) returns (stream Note);
}
"#;

    fn pool() -> (DescriptorPool, PathBuf) {
        let dir = std::env::temp_dir().join(format!("grpcload-test-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.proto");
        std::fs::write(&f, PROTO).unwrap();
        (load_pool(&f, &[]).unwrap(), dir)
    }

    #[test]
    fn json_to_protobuf() {
        let (p, dir) = pool();
        let m = find_method(&p, "t.v1.Board.Get").unwrap();
        assert_eq!(m.path, "/t.v1.Board/Get");
        assert!(!m.server_streaming);
        // field 1, wire type 2: tag 0x0a, len 2, "hi"
        assert_eq!(encode_json(&m.input, &serde_json::json!({"title": "hi"})).unwrap(), vec![0x0a, 2, b'h', b'i']);
        // default values are not encoded in proto3
        assert_eq!(encode_json(&m.input, &serde_json::json!({})).unwrap(), Vec::<u8>::new());

        let l = find_method(&p, "t.v1.Board/List").unwrap();
        assert!(l.server_streaming);
        assert_eq!(
            encode_json(&l.input, &serde_json::json!({"mail": "a@b"})).unwrap(),
            vec![0x12, 3, b'a', b'@', b'b']
        );

        let big = p.get_message_by_name("t.v1.Big").unwrap();
        let enc = encode_json(
            &big,
            &serde_json::json!({"n": "300", "xs": [1, 2], "who": {"nickname": "x"}, "flag": true, "raw": "AQI="}),
        )
        .unwrap();
        assert_eq!(
            enc,
            vec![0x08, 0xac, 0x02, 0x12, 2, 1, 2, 0x1a, 3, 0x0a, 1, b'x', 0x20, 1, 0x2a, 2, 1, 2]
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn request_lists_are_framed() {
        let (p, dir) = pool();
        let m = find_method(&p, "t.v1.Board.Get").unwrap();
        let v = encode_requests(&m.input, br#"[{"title":"a"},{"title":"bc"}]"#, "data").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(&v[0][..], &[0, 0, 0, 0, 3, 0x0a, 1, b'a']);
        assert_eq!(&v[1][..], &[0, 0, 0, 0, 4, 0x0a, 2, b'b', b'c']);
        let one = encode_requests(&m.input, br#"{"title":"a"}"#, "data").unwrap();
        assert_eq!(one.len(), 1);
        assert!(encode_requests(&m.input, br#"[{"nope":1}]"#, "data").unwrap_err().contains("message 0"));
        assert!(encode_requests(&m.input, br#"[]"#, "data").is_err());
        assert!(encode_requests(&m.input, br#"42"#, "data").is_err());
        assert!(encode_requests(&m.input, br#"{"#, "data").unwrap_err().contains("not valid JSON"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn method_errors() {
        let (p, dir) = pool();
        assert!(find_method(&p, "t.v1.Board.Nope").unwrap_err().contains("unknown method"));
        assert!(find_method(&p, "t.v1.Nope.Get").unwrap_err().contains("unknown service"));
        assert!(find_method(&p, "t.v1.Board.Up").unwrap_err().contains("client streaming"));
        assert!(find_method(&p, "t.v1.Board.Chat").unwrap_err().contains("bidirectional"));
        assert!(find_method(&p, "Get").is_err());
        assert!(load_pool(Path::new("/nonexistent/x.proto"), &[]).unwrap_err().contains("/nonexistent/x.proto"));
        std::fs::remove_dir_all(dir).ok();
    }
}
