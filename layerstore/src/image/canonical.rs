//! Canonical JSON: one serialization per value, and a digest computed from exactly those bytes.
//!
//! A manifest's digest is the digest of the bytes that were pushed or written, so a value must be
//! serialized once, and those bytes kept, hashed and stored together ([`CanonicalBlob`]).
//!
//! The bytes are compact JSON in the order Go's `encoding/json` (and so containerd, Docker and
//! skopeo) writes them: struct fields in declaration order, map keys sorted. Sorting matters
//! because `oci-spec` keeps annotations and labels in `HashMap`s, whose iteration order changes
//! from one process to the next; plain `serde_json::to_vec` would make the digest of the same
//! manifest differ between two runs. Serialization therefore goes through a small tree that
//! records which objects are structs (kept in order) and which are maps (sorted), independent of
//! how `serde_json` is configured.

use serde::Serialize;
use serde::ser::{self, Error as _};

use crate::content::Ingester;
use crate::digest::Digest;
use crate::image::{ImageError, new_descriptor};
use oci_spec::image::Descriptor;

/// Serializes `value` to canonical JSON bytes (see the module docs).
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let node = value.serialize(NodeSerializer)?;
    let mut out = Vec::with_capacity(256);
    node.write(&mut out)?;
    Ok(out)
}

/// A blob serialized once: its media type, its bytes and the digest of those bytes.
///
/// Build manifests, indexes and configs with [`CanonicalBlob::new`], then use
/// [`CanonicalBlob::descriptor`] to reference the blob and [`CanonicalBlob::ingest`] to store
/// exactly the bytes that were hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalBlob {
    media_type: String,
    bytes: Vec<u8>,
    digest: Digest,
}

impl CanonicalBlob {
    /// Serializes `value` canonically and hashes the result with sha256.
    pub fn new<T: Serialize + ?Sized>(media_type: &str, value: &T) -> Result<Self, ImageError> {
        let bytes = to_canonical_json(value).map_err(|source| ImageError::Json {
            what: format!("serializing {media_type}"),
            source,
        })?;
        Ok(Self::from_bytes(media_type, bytes))
    }

    /// Wraps bytes that were already serialized (for example a manifest read from a store).
    pub fn from_bytes(media_type: &str, bytes: Vec<u8>) -> Self {
        let digest = Digest::sha256(&bytes);
        CanonicalBlob {
            media_type: media_type.to_owned(),
            bytes,
            digest,
        }
    }

    /// The media type the blob was serialized as.
    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// The serialized bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The serialized bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The sha256 digest of [`CanonicalBlob::bytes`].
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Length of [`CanonicalBlob::bytes`].
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// A descriptor (media type, digest, size) that references this blob.
    pub fn descriptor(&self) -> Descriptor {
        new_descriptor(&self.media_type, &self.digest, self.size())
    }

    /// Commits the bytes to `store`, checked against the size and digest, and returns the
    /// blob's descriptor.
    pub fn ingest<S: Ingester + ?Sized>(&self, store: &S) -> Result<Descriptor, ImageError> {
        store
            .ingest(&mut &self.bytes[..], Some(self.size()), Some(&self.digest))
            .map_err(|source| ImageError::Content {
                what: format!("{} {}", self.media_type, self.digest),
                source,
            })?;
        Ok(self.descriptor())
    }
}

/// The intermediate tree: like `serde_json::Value`, but objects remember whether they came from
/// a struct (keep field order) or a map (keys are sorted when written).
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object { entries: Vec<(String, Node)> },
}

impl Node {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Node::Null => out.extend_from_slice(b"null"),
            Node::Bool(true) => out.extend_from_slice(b"true"),
            Node::Bool(false) => out.extend_from_slice(b"false"),
            Node::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Node::String(s) => serde_json::to_writer(&mut *out, s)?,
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out)?;
                }
                out.push(b']');
            }
            Node::Object { entries } => {
                out.push(b'{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key)?;
                    out.push(b':');
                    value.write(out)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }
}

struct NodeSerializer;

fn tagged(variant: &'static str, value: Node) -> Node {
    Node::Object {
        entries: vec![(variant.to_owned(), value)],
    }
}

impl ser::Serializer for NodeSerializer {
    type Ok = Node;
    type Error = serde_json::Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = StructBuilder;

    fn serialize_bool(self, v: bool) -> Result<Node, Self::Error> {
        Ok(Node::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Node, Self::Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<Node, Self::Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<Node, Self::Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Node, Self::Error> {
        Ok(Node::Number(v.into()))
    }
    fn serialize_u8(self, v: u8) -> Result<Node, Self::Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Node, Self::Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<Node, Self::Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<Node, Self::Error> {
        Ok(Node::Number(v.into()))
    }
    fn serialize_f32(self, v: f32) -> Result<Node, Self::Error> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Node, Self::Error> {
        serde_json::Number::from_f64(v)
            .map(Node::Number)
            .ok_or_else(|| serde_json::Error::custom(format!("{v} cannot be written as JSON")))
    }
    fn serialize_char(self, v: char) -> Result<Node, Self::Error> {
        Ok(Node::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Node, Self::Error> {
        Ok(Node::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Node, Self::Error> {
        Ok(Node::Array(
            v.iter().map(|b| Node::Number((*b).into())).collect(),
        ))
    }
    fn serialize_none(self) -> Result<Node, Self::Error> {
        Ok(Node::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Node, Self::Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Node, Self::Error> {
        Ok(Node::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Node, Self::Error> {
        Ok(Node::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Node, Self::Error> {
        Ok(Node::String(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Node, Self::Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Node, Self::Error> {
        Ok(tagged(variant, value.serialize(NodeSerializer)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, Self::Error> {
        Ok(SeqBuilder {
            items: Vec::with_capacity(len.unwrap_or(0)),
            variant: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, Self::Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, Self::Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, Self::Error> {
        Ok(SeqBuilder {
            items: Vec::with_capacity(len),
            variant: Some(variant),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, Self::Error> {
        Ok(MapBuilder {
            entries: Vec::with_capacity(len.unwrap_or(0)),
            key: None,
        })
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<StructBuilder, Self::Error> {
        Ok(StructBuilder {
            entries: Vec::with_capacity(len),
            variant: None,
        })
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructBuilder, Self::Error> {
        Ok(StructBuilder {
            entries: Vec::with_capacity(len),
            variant: Some(variant),
        })
    }
}

struct SeqBuilder {
    items: Vec<Node>,
    variant: Option<&'static str>,
}

impl SeqBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), serde_json::Error> {
        self.items.push(value.serialize(NodeSerializer)?);
        Ok(())
    }
    fn finish(self) -> Node {
        let array = Node::Array(self.items);
        match self.variant {
            Some(variant) => tagged(variant, array),
            None => array,
        }
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Node;
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.push(value)
    }
    fn end(self) -> Result<Node, Self::Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Node;
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.push(value)
    }
    fn end(self) -> Result<Node, Self::Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Node;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.push(value)
    }
    fn end(self) -> Result<Node, Self::Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Node;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        self.push(value)
    }
    fn end(self) -> Result<Node, Self::Error> {
        Ok(self.finish())
    }
}

struct MapBuilder {
    entries: Vec<(String, Node)>,
    key: Option<String>,
}

/// Turns a serialized map key into the string JSON needs, as `serde_json` does: strings as they
/// are, numbers and booleans by their text.
fn key_string(node: Node) -> Result<String, serde_json::Error> {
    match node {
        Node::String(s) => Ok(s),
        Node::Number(n) => Ok(n.to_string()),
        Node::Bool(b) => Ok(b.to_string()),
        _ => Err(serde_json::Error::custom(
            "JSON object keys must be strings",
        )),
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Node;
    type Error = serde_json::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Self::Error> {
        self.key = Some(key_string(key.serialize(NodeSerializer)?)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| serde_json::Error::custom("map value serialized before its key"))?;
        self.entries.push((key, value.serialize(NodeSerializer)?));
        Ok(())
    }
    fn end(mut self) -> Result<Node, Self::Error> {
        // Stable sort: Go's encoding/json sorts map keys; equal keys cannot come from a map.
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Node::Object {
            entries: self.entries,
        })
    }
}

struct StructBuilder {
    entries: Vec<(String, Node)>,
    variant: Option<&'static str>,
}

impl StructBuilder {
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        self.entries
            .push((key.to_owned(), value.serialize(NodeSerializer)?));
        Ok(())
    }
    fn finish(self) -> Node {
        let object = Node::Object {
            entries: self.entries,
        };
        match self.variant {
            Some(variant) => tagged(variant, object),
            None => object,
        }
    }
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Node;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<Node, Self::Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for StructBuilder {
    type Ok = Node;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<Node, Self::Error> {
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        schema_version: u32,
        media_type: &'static str,
        annotations: HashMap<String, String>,
        nested: Option<Vec<(u8, bool)>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        quote: &'static str,
    }

    #[test]
    fn keeps_struct_order_and_sorts_maps() {
        let annotations: HashMap<String, String> = (0..32)
            .rev()
            .map(|i| (format!("k{i:02}"), format!("v{i}")))
            .collect();
        let sample = Sample {
            schema_version: 2,
            media_type: "x",
            annotations,
            nested: Some(vec![(1, true)]),
            skipped: None,
            quote: "a\"b\n<",
        };
        let bytes = to_canonical_json(&sample).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(
            r#"{"schemaVersion":2,"mediaType":"x","annotations":{"k00":"v0","k01":"v1","#
        ));
        assert!(text.ends_with(r#""nested":[[1,true]],"quote":"a\"b\n<"}"#));
        // Same value, same bytes, whatever the HashMap's iteration order.
        let again: HashMap<String, String> = sample
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let sample2 = Sample {
            annotations: again,
            ..sample
        };
        assert_eq!(to_canonical_json(&sample2).unwrap(), bytes);
        // And it is valid JSON equal to what serde_json makes of it.
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed, serde_json::to_value(&sample2).unwrap());
    }

    #[test]
    fn numeric_map_keys_become_strings() {
        let map: BTreeMap<u32, &str> = [(10, "a"), (2, "b")].into_iter().collect();
        // Keys sort as strings, as Go sorts them.
        assert_eq!(
            to_canonical_json(&map).unwrap(),
            br#"{"10":"a","2":"b"}"#.to_vec()
        );
        assert!(to_canonical_json(&f64::NAN).is_err());
    }

    #[test]
    fn blob_digest_is_of_its_bytes() {
        let blob = CanonicalBlob::new("application/json", &vec!["a", "b"]).unwrap();
        assert_eq!(blob.bytes(), br#"["a","b"]"#);
        assert_eq!(blob.digest(), &Digest::sha256(br#"["a","b"]"#));
        assert_eq!(blob.descriptor().size(), 9);
    }
}
