//! YAML in which no character a terminal must not get stands raw: strings holding one are written double-quoted, with the character escaped.
//!
//! serde-saphyr already double-quotes and escapes control characters (C0, DEL, C1) and U+FEFF,
//! U+2028, U+2029, so those values read back as they were; but YAML counts the other invisible
//! characters (bidi controls, zero-width characters, tags: see [`super::is_hidden`]) as
//! printable and writes them raw, in plain or single-quoted scalars that have no escapes. Here
//! every string value that holds one goes through the serializer as
//! [`serde_saphyr::DoubleQuoted`], and the characters are then escaped in the text
//! (`\u202E`, `\U000E0041`), which YAML reads back as the same characters. Map keys are left
//! as they are: nodectl's keys are field names, rule ids and capture names, never node text.

use serde::ser::{
    Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

/// `value` as YAML, invisible characters escaped.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let text = serde_saphyr::to_string(&Safe(value))?;
    Ok(escape_raw(text))
}

/// Invisible characters left raw, written as YAML escapes. Every one stands in a double-quoted
/// scalar (see the module's description), where an escape means the same character; one in a
/// map key (none of nodectl's) becomes escape text there, still never raw.
fn escape_raw(text: String) -> String {
    if !text.chars().any(super::is_hidden) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match u32::from(c) {
            _ if !super::is_hidden(c) => out.push(c),
            code @ 0..=0xFFFF => out.push_str(&format!("\\u{code:04X}")),
            code => out.push_str(&format!("\\U{code:08X}")),
        }
    }
    out
}

/// A value whose strings are serialized by [`SafeSerializer`].
struct Safe<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Safe<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(SafeSerializer(serializer))
    }
}

/// Passes everything to the serializer inside, strings with an invisible character as
/// double-quoted.
struct SafeSerializer<S>(S);

impl<S: Serializer> Serializer for SafeSerializer<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = SafeCompound<S::SerializeSeq>;
    type SerializeTuple = SafeCompound<S::SerializeTuple>;
    type SerializeTupleStruct = SafeCompound<S::SerializeTupleStruct>;
    type SerializeTupleVariant = SafeCompound<S::SerializeTupleVariant>;
    type SerializeMap = SafeCompound<S::SerializeMap>;
    type SerializeStruct = SafeCompound<S::SerializeStruct>;
    type SerializeStructVariant = SafeCompound<S::SerializeStructVariant>;

    fn serialize_str(self, v: &str) -> Result<S::Ok, S::Error> {
        if v.chars().any(super::is_hidden) {
            serde_saphyr::DoubleQuoted(v).serialize(self.0)
        } else {
            self.0.serialize_str(v)
        }
    }

    fn serialize_char(self, v: char) -> Result<S::Ok, S::Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_bool(self, v: bool) -> Result<S::Ok, S::Error> {
        self.0.serialize_bool(v)
    }
    fn serialize_i8(self, v: i8) -> Result<S::Ok, S::Error> {
        self.0.serialize_i8(v)
    }
    fn serialize_i16(self, v: i16) -> Result<S::Ok, S::Error> {
        self.0.serialize_i16(v)
    }
    fn serialize_i32(self, v: i32) -> Result<S::Ok, S::Error> {
        self.0.serialize_i32(v)
    }
    fn serialize_i64(self, v: i64) -> Result<S::Ok, S::Error> {
        self.0.serialize_i64(v)
    }
    fn serialize_i128(self, v: i128) -> Result<S::Ok, S::Error> {
        self.0.serialize_i128(v)
    }
    fn serialize_u8(self, v: u8) -> Result<S::Ok, S::Error> {
        self.0.serialize_u8(v)
    }
    fn serialize_u16(self, v: u16) -> Result<S::Ok, S::Error> {
        self.0.serialize_u16(v)
    }
    fn serialize_u32(self, v: u32) -> Result<S::Ok, S::Error> {
        self.0.serialize_u32(v)
    }
    fn serialize_u64(self, v: u64) -> Result<S::Ok, S::Error> {
        self.0.serialize_u64(v)
    }
    fn serialize_u128(self, v: u128) -> Result<S::Ok, S::Error> {
        self.0.serialize_u128(v)
    }
    fn serialize_f32(self, v: f32) -> Result<S::Ok, S::Error> {
        self.0.serialize_f32(v)
    }
    fn serialize_f64(self, v: f64) -> Result<S::Ok, S::Error> {
        self.0.serialize_f64(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<S::Ok, S::Error> {
        self.0.serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_none()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        self.0.serialize_some(&Safe(value))
    }
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit()
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0.serialize_newtype_struct(name, &Safe(value))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Safe(value))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.0.serialize_seq(len).map(SafeCompound)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.0.serialize_tuple(len).map(SafeCompound)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.0.serialize_tuple_struct(name, len).map(SafeCompound)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(SafeCompound)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.0.serialize_map(len).map(SafeCompound)
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.0.serialize_struct(name, len).map(SafeCompound)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(SafeCompound)
    }
    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A sequence, tuple, map or struct being serialized: its values wrapped in [`Safe`].
struct SafeCompound<C>(C);

impl<C: SerializeSeq> SerializeSeq for SafeCompound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_element(&Safe(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeTuple> SerializeTuple for SafeCompound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_element(&Safe(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeTupleStruct> SerializeTupleStruct for SafeCompound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_field(&Safe(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeTupleVariant> SerializeTupleVariant for SafeCompound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_field(&Safe(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeMap> SerializeMap for SafeCompound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        self.0.serialize_key(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        self.0.serialize_value(&Safe(value))
    }
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), C::Error> {
        self.0.serialize_entry(key, &Safe(value))
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeStruct> SerializeStruct for SafeCompound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.0.serialize_field(key, &Safe(value))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.0.skip_field(key)
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

impl<C: SerializeStructVariant> SerializeStructVariant for SafeCompound<C> {
    type Ok = C::Ok;
    type Error = C::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), C::Error> {
        self.0.serialize_field(key, &Safe(value))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
        self.0.skip_field(key)
    }
    fn end(self) -> Result<C::Ok, C::Error> {
        self.0.end()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct Event {
        message: String,
        fields: BTreeMap<String, String>,
        seq: Option<u64>,
        tags: Vec<&'static str>,
    }

    #[test]
    fn invisible_characters_are_escaped_and_read_back() {
        for message in [
            "plain words",
            "bidi \u{202e}txt.exe\u{202c} and an isolate \u{2066}x\u{2069}",
            "zero\u{200b}width, joiner\u{200d}, soft\u{ad}hyphen, tag \u{e0041}",
            "C1 \u{9b}31m, DEL \u{7f}, ESC \u{1b}[2J, BOM \u{feff}",
            "two\nlines \u{202e}",
        ] {
            let event = Event {
                message: message.to_owned(),
                fields: BTreeMap::from([("ring".to_owned(), format!("{message}!"))]),
                seq: Some(3),
                tags: vec!["a", "\u{200f}b"],
            };
            let text = to_string(&event).unwrap();
            assert!(!text.chars().any(crate::render::is_hidden), "{text:?}");
            let back: BTreeMap<String, serde_json::Value> = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(back["message"], message, "{text}");
            assert_eq!(back["fields"]["ring"], format!("{message}!"), "{text}");
            assert_eq!(back["tags"][1], "\u{200f}b", "{text}");
            assert_eq!(back["seq"], 3, "{text}");
        }
        // Text without them is what serde-saphyr writes.
        let plain = Event {
            message: "amdgpu: MES failed".to_owned(),
            fields: BTreeMap::new(),
            seq: None,
            tags: vec![],
        };
        assert_eq!(
            to_string(&plain).unwrap(),
            serde_saphyr::to_string(&plain).unwrap()
        );
    }
}
