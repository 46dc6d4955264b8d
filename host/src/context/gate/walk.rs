//! Finds what the gate rules on in a parse tree: every function called, every relation named,
//! every relation written.
//!
//! The tree is walked through its `Serialize` implementation, which visits every field of every
//! node: a node kind the gate has never heard of is walked like any other, so nothing can hide in
//! it. The walk keeps only names — never a copy of the tree — so its memory is its depth, not the
//! statement's size.

use serde::Serialize;
use serde::ser::{self, Impossible};

/// What the tree holds that the gate rules on.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Every relation named anywhere (read or written), unqualified.
    pub(crate) relations: Vec<String>,
    /// Every function called, qualified as written.
    pub(crate) functions: Vec<String>,
    /// Every relation written by an INSERT, UPDATE, DELETE or MERGE (including in CTEs).
    pub(crate) written: Vec<Target>,
    /// Nodes in the tree.
    pub(crate) nodes: usize,
}

/// A relation a statement writes: (schema, name) as written.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) schema: String,
    pub(crate) name: String,
}

/// Where the walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Struct(&'static str),
    Field(&'static str),
}

/// Walks `tree`; `None` when some part of it could not be walked (then the gate refuses).
pub(crate) fn walk(tree: &impl Serialize) -> Option<Found> {
    let mut walker = Walker::default();
    tree.serialize(&mut walker).ok()?;
    Some(walker.found)
}

#[derive(Default)]
struct Walker {
    found: Found,
    stack: Vec<Frame>,
    /// The name parts of the function whose `funcname` is being walked.
    function: Option<Vec<String>>,
    /// The (schema, name) of the RangeVar being walked.
    relation: Option<(String, String)>,
}

/// Statements whose `relation` field is the table they write.
const WRITES: &[&str] = &["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"];

impl Walker {
    fn enter_struct(&mut self, name: &'static str) {
        self.found.nodes += 1;
        self.stack.push(Frame::Struct(name));
        if name == "RangeVar" {
            self.relation = Some((String::new(), String::new()));
        }
    }

    fn leave_struct(&mut self) {
        let Some(Frame::Struct(name)) = self.stack.pop() else { return };
        if name != "RangeVar" {
            return;
        }
        let Some((schema, relname)) = self.relation.take() else { return };
        let n = self.stack.len();
        let written = n >= 2
            && self.stack[n - 1] == Frame::Field("relation")
            && matches!(self.stack[n - 2], Frame::Struct(s) if WRITES.contains(&s));
        if written {
            self.found.written.push(Target { schema, name: relname.clone() });
        }
        self.found.relations.push(relname);
    }

    fn enter_field(&mut self, key: &'static str) {
        if key == "funcname" && self.stack.last() == Some(&Frame::Struct("FuncCall")) {
            self.function = Some(Vec::new());
        }
        self.stack.push(Frame::Field(key));
    }

    fn leave_field(&mut self) {
        let field = self.stack.pop();
        if field == Some(Frame::Field("funcname"))
            && self.stack.last() == Some(&Frame::Struct("FuncCall"))
            && let Some(parts) = self.function.take()
        {
            self.found.functions.push(parts.join("."));
        }
    }

    fn string(&mut self, value: &str) {
        let n = self.stack.len();
        if n < 2 {
            return;
        }
        match (self.stack[n - 2], self.stack[n - 1]) {
            (Frame::Struct("String"), Frame::Field("sval")) => {
                if let Some(parts) = self.function.as_mut() {
                    parts.push(value.to_owned());
                }
            }
            (Frame::Struct("RangeVar"), Frame::Field(field)) => {
                if let Some((schema, name)) = self.relation.as_mut() {
                    match field {
                        "schemaname" => *schema = value.to_owned(),
                        "relname" => *name = value.to_owned(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// Never raised by the walker; required by serde.
#[derive(Debug)]
struct WalkError;

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the parse tree could not be walked")
    }
}

impl std::error::Error for WalkError {}

impl ser::Error for WalkError {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        WalkError
    }
}

type Done = Result<(), WalkError>;

impl ser::Serializer for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), WalkError>;

    fn serialize_bool(self, _: bool) -> Done {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Done {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Done {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Done {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Done {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Done {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Done {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Done {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Done {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Done {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Done {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Done {
        Ok(())
    }
    fn serialize_str(self, value: &str) -> Done {
        self.string(value);
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Done {
        Ok(())
    }
    fn serialize_none(self) -> Done {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Done {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, WalkError> {
        self.enter_struct(name);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, WalkError> {
        // The protobuf types have no struct variants: refusing is safer than skipping.
        Err(WalkError)
    }
}

/// The compound serializers that only walk into their elements.
macro_rules! walk_elements {
    ($($trait:ident :: $method:ident),+) => {$(
        impl ser::$trait for &mut Walker {
            type Ok = ();
            type Error = WalkError;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Done {
                value.serialize(&mut **self)
            }
            fn end(self) -> Done {
                Ok(())
            }
        }
    )+};
}

walk_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Done {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Done {
        value.serialize(&mut **self)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walker {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Done {
        self.enter_field(key);
        let result = value.serialize(&mut **self);
        self.leave_field();
        result
    }
    fn end(self) -> Done {
        self.leave_struct();
        Ok(())
    }
}
