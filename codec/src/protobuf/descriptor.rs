//! Where message descriptors come from.
//!
//! Producers describe their records three ways, and each ends in a
//! [`MessageDescriptor`] whose pool also holds the Google well-known types:
//!
//! * a serialized, self-contained `DescriptorProto` ([`descriptor_from_descriptor_proto`]),
//!   as the Zerobus SDKs send it: nested types live inside the message, and
//!   type names are either relative to the message (`.Root.Nested`) or carry
//!   the package of the file it was cut from (`.pkg.Root.Nested`);
//! * a serialized `FileDescriptorSet` plus a message name
//!   ([`descriptor_from_file_descriptor_set`]), as `protoc --descriptor_set_out` writes it;
//! * `.proto` source text plus a message name ([`descriptor_from_proto_source`]),
//!   compiled in-process by `protox` (imports of the well-known types work;
//!   imports of other user files do not).

use prost::Message as _;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use prost_types::{DescriptorProto, FileDescriptorProto};

use crate::error::{Error, Result};

/// The file name given to a lone `DescriptorProto` or a `.proto` source.
const SYNTHETIC_FILE: &str = "weir_record.proto";

/// Builds a descriptor from a serialized self-contained `DescriptorProto`.
///
/// The message is placed alone in a synthetic file. Its syntax is proto2
/// (a `DescriptorProto` does not say), unless a field is marked
/// `proto3_optional`, which only proto3 allows. Under proto2 every singular
/// field has presence, so an absent field decodes as null, as Zerobus does.
pub fn descriptor_from_descriptor_proto(bytes: &[u8]) -> Result<MessageDescriptor> {
    let message = DescriptorProto::decode(bytes)
        .map_err(|e| Error::Descriptor(format!("DescriptorProto: {e}")))?;
    let root = message
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::Descriptor("DescriptorProto has no name".into()))?;

    let mut type_names = Vec::new();
    collect_type_names(&message, &mut type_names);
    let package = infer_package(&root, &type_names);
    let mut dependencies: Vec<String> = type_names
        .iter()
        .filter_map(|t| well_known_file(t))
        .map(str::to_owned)
        .collect();
    dependencies.sort();
    dependencies.dedup();
    let proto3 = any_proto3_optional(&message);

    let file = FileDescriptorProto {
        name: Some(SYNTHETIC_FILE.to_owned()),
        package: (!package.is_empty()).then(|| package.clone()),
        dependency: dependencies,
        message_type: vec![message],
        syntax: Some(if proto3 { "proto3" } else { "proto2" }.to_owned()),
        ..Default::default()
    };
    let mut pool = DescriptorPool::global();
    pool.add_file_descriptor_proto(file)
        .map_err(|e| Error::Descriptor(e.to_string()))?;
    let full_name = if package.is_empty() {
        root
    } else {
        format!("{package}.{root}")
    };
    pool.get_message_by_name(&full_name)
        .ok_or(Error::MessageNotFound(full_name))
}

/// Builds a descriptor from a serialized `FileDescriptorSet` and the name of
/// one of its messages (fully qualified, or a unique short name).
pub fn descriptor_from_file_descriptor_set(
    bytes: &[u8],
    message: &str,
) -> Result<MessageDescriptor> {
    let mut pool = DescriptorPool::global();
    pool.decode_file_descriptor_set(bytes)
        .map_err(|e| Error::Descriptor(e.to_string()))?;
    find_message(&pool, message)
}

/// Compiles `.proto` source text in-process and returns one of its messages
/// (fully qualified, or a unique short name).
pub fn descriptor_from_proto_source(source: &str, message: &str) -> Result<MessageDescriptor> {
    // The parser recurses per nesting level: bound the depth first, so that
    // no source can overflow the stack.
    check_nesting(source)?;
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(SourceResolver {
        source: source.to_owned(),
    });
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler
        .open_file(SYNTHETIC_FILE)
        .map_err(|e| Error::Descriptor(e.to_string()))?;
    find_message(&compiler.descriptor_pool(), message)
}

/// Fails if brackets of any kind (`{`, `(`, `[`, `<`) nest deeper than
/// [`MAX_DEPTH`](super::MAX_DEPTH) outside strings and comments. Checked
/// in one pass without recursion.
fn check_nesting(source: &str) -> Result<()> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' | b'(' | b'[' | b'<' => {
                depth += 1;
                if depth > super::MAX_DEPTH {
                    return Err(Error::Descriptor(format!(
                        "the .proto source nests deeper than {} levels",
                        super::MAX_DEPTH
                    )));
                }
            }
            b'}' | b')' | b']' | b'>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Serves the one in-memory source file to `protox`.
struct SourceResolver {
    source: String,
}

impl protox::file::FileResolver for SourceResolver {
    fn open_file(&self, name: &str) -> std::result::Result<protox::file::File, protox::Error> {
        if name == SYNTHETIC_FILE {
            protox::file::File::from_source(name, &self.source)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Looks a message up by full name (with or without the leading dot), then
/// by short name if exactly one message has it.
fn find_message(pool: &DescriptorPool, name: &str) -> Result<MessageDescriptor> {
    let name = name.strip_prefix('.').unwrap_or(name);
    if let Some(found) = pool.get_message_by_name(name) {
        return Ok(found);
    }
    let mut candidates = pool
        .all_messages()
        .filter(|m| m.name() == name && !m.package_name().starts_with("google.protobuf"));
    match (candidates.next(), candidates.next()) {
        (Some(found), None) => Ok(found),
        _ => Err(Error::MessageNotFound(name.to_owned())),
    }
}

fn collect_type_names(message: &DescriptorProto, out: &mut Vec<String>) {
    for field in &message.field {
        if let Some(t) = field.type_name.as_ref().filter(|t| !t.is_empty()) {
            out.push(t.clone());
        }
    }
    for nested in &message.nested_type {
        collect_type_names(nested, out);
    }
}

fn any_proto3_optional(message: &DescriptorProto) -> bool {
    message
        .field
        .iter()
        .any(|f| f.proto3_optional == Some(true))
        || message.nested_type.iter().any(any_proto3_optional)
}

/// Recovers the package of the file a `DescriptorProto` was cut from: a
/// fully qualified reference to the root or one of its nested types reads
/// `.pkg.Root` or `.pkg.Root.Nested`, so whatever stands before `.Root` is
/// the package. Without such a reference the package is empty.
fn infer_package(root: &str, type_names: &[String]) -> String {
    for name in type_names {
        let Some(qualified) = name.strip_prefix('.') else {
            continue;
        };
        if qualified.starts_with("google.protobuf.") {
            continue;
        }
        let parts: Vec<&str> = qualified.split('.').collect();
        if let Some(pos) = parts.iter().position(|p| *p == root) {
            return parts[..pos].join(".");
        }
    }
    String::new()
}

/// The file defining a referenced Google well-known type, if it is one.
fn well_known_file(type_name: &str) -> Option<&'static str> {
    let name = type_name.strip_prefix(".google.protobuf.")?;
    Some(match name {
        "Timestamp" => "google/protobuf/timestamp.proto",
        "Duration" => "google/protobuf/duration.proto",
        "Any" => "google/protobuf/any.proto",
        "Empty" => "google/protobuf/empty.proto",
        "FieldMask" => "google/protobuf/field_mask.proto",
        "Struct" | "Value" | "ListValue" | "NullValue" => "google/protobuf/struct.proto",
        "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value"
        | "UInt32Value" | "BoolValue" | "StringValue" | "BytesValue" => {
            "google/protobuf/wrappers.proto"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::Kind;

    const SOURCE: &str = r#"
        syntax = "proto3";
        package acme.v1;
        import "google/protobuf/timestamp.proto";
        message Reading {
            message Meta { google.protobuf.Timestamp ts = 1; string host = 2; }
            int64 id = 1;
            Meta meta = 2;
            repeated double samples = 3;
        }
    "#;

    #[test]
    fn from_source_by_full_and_short_name() {
        let full = descriptor_from_proto_source(SOURCE, "acme.v1.Reading").unwrap();
        assert_eq!(full.full_name(), "acme.v1.Reading");
        let short = descriptor_from_proto_source(SOURCE, "Reading").unwrap();
        assert_eq!(short.full_name(), "acme.v1.Reading");
        let meta = short.get_field_by_name("meta").unwrap();
        let Kind::Message(meta) = meta.kind() else {
            panic!("meta is a message")
        };
        assert_eq!(meta.full_name(), "acme.v1.Reading.Meta");
    }

    #[test]
    fn from_source_errors() {
        let err = descriptor_from_proto_source("syntax = \"proto3\"; message {", "X").unwrap_err();
        assert!(matches!(err, Error::Descriptor(_)), "{err}");
        let err = descriptor_from_proto_source(SOURCE, "Nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "message \"Nope\" not found in the descriptor"
        );
        assert!(err.is_caller_fault());
    }

    #[test]
    fn deeply_nested_source_is_refused_before_parsing() {
        let depth = 200_000;
        let source = format!(
            "syntax = \"proto3\"; {} {}",
            "message A { ".repeat(depth),
            "}".repeat(depth)
        );
        let err = descriptor_from_proto_source(&source, "A").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid protobuf descriptor: the .proto source nests deeper than 64 levels"
        );
        // Brackets in strings and comments do not count.
        let quoted = format!(
            "syntax = \"proto3\"; // {}\n/* {} */ message A {{ string s = 1 [default = \"{}\"]; }}",
            "{".repeat(100),
            "[".repeat(100),
            "<".repeat(100)
        );
        assert!(check_nesting(&quoted).is_ok());
    }

    #[test]
    fn from_file_descriptor_set() {
        let desc = descriptor_from_proto_source(SOURCE, "Reading").unwrap();
        let bytes = desc.parent_pool().encode_to_vec();
        let again = descriptor_from_file_descriptor_set(&bytes, ".acme.v1.Reading").unwrap();
        assert_eq!(again.fields().len(), 3);
        let err = descriptor_from_file_descriptor_set(b"\xff\xff", "X").unwrap_err();
        assert!(matches!(err, Error::Descriptor(_)), "{err}");
    }

    #[test]
    fn from_descriptor_proto_with_package_qualified_nested_types() {
        let desc = descriptor_from_proto_source(SOURCE, "Reading").unwrap();
        let bytes = desc.descriptor_proto().encode_to_vec();
        let again = descriptor_from_descriptor_proto(&bytes).unwrap();
        assert_eq!(again.full_name(), "acme.v1.Reading");
        let meta = again.get_field_by_name("meta").unwrap();
        assert!(matches!(meta.kind(), Kind::Message(m) if m.name() == "Meta"));
    }

    #[test]
    fn from_descriptor_proto_with_root_relative_names() {
        // The Zerobus SDKs' generated descriptors: no package, `.Root.Nested`.
        let source = r#"
            syntax = "proto2";
            message Root { message Inner { optional int32 a = 1; } optional Inner inner = 1; }
        "#;
        let desc = descriptor_from_proto_source(source, "Root").unwrap();
        let bytes = desc.descriptor_proto().encode_to_vec();
        let again = descriptor_from_descriptor_proto(&bytes).unwrap();
        assert_eq!(again.full_name(), "Root");
        assert!(descriptor_from_descriptor_proto(b"\x0a").is_err());
    }
}
